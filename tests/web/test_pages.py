"""Every page in a real Chromium: it loads clean, it signs in as it should, it renders
server values as text, it reads at 1280 and 390 px, light and dark."""

from __future__ import annotations

from playwright.sync_api import expect

from .helpers import ADMIN_KEY, PAGES, PROXY_KEY, sign_in, visit

XSS = "<img src=x onerror=alert(1)>"


def test_every_page_loads_without_console_errors(ui_server, tab):
    server = ui_server()
    server.chat()
    page = tab.open(server.url + "/")
    assert page.url.endswith("/ui/")  # / redirects to the UI
    sign_in(page, ADMIN_KEY)
    page.wait_for_selector("#access")
    assert page.inner_text("#access") == "admin (admin#1)"
    tab.errors.clear()  # the 401 that asked for the key is behind us
    for name in PAGES:
        visit(page, server.url, name)
        assert page.locator("main h1").first.is_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} is wider than the window by {overflow} px"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(246, 247, 249)"  # light, as the browser prefers here
    assert tab.errors == []


def test_a_keyless_loopback_server_opens_without_a_key(ui_server, tab):
    server = ui_server(keys=False)
    page = tab.open(server.url + "/ui/")
    page.wait_for_selector(PAGES["overview"])
    assert page.inner_text("#access") == "open: loopback, no keys"
    assert page.locator("#key").count() == 0
    assert page.get_by_role("button", name="Sign out").count() == 0
    visit(page, server.url, "chains")
    assert page.get_by_role("button", name="Test streaming").first.is_enabled()
    assert tab.errors == []


def test_a_wrong_key_is_refused_and_not_kept(ui_server, tab):
    server = ui_server()
    page = tab.open(server.url + "/ui/")
    sign_in(page, "not-a-key")
    expect(page.locator("#signin-error")).to_contain_text("not accepted")
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#nav a").count() == 0


def test_an_admin_key_lives_in_session_storage_only(ui_server, tab):
    server = ui_server()
    page = tab.open(server.url + "/ui/")
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text))
    sign_in(page, ADMIN_KEY)
    page.wait_for_selector(PAGES["overview"])
    assert page.evaluate("Object.values(sessionStorage)") == [ADMIN_KEY]
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    assert tab.page.context.cookies() == []
    assert ADMIN_KEY not in page.url
    assert not any(ADMIN_KEY in line for line in seen)
    # A reload keeps the session; signing out forgets the key.
    page.reload()
    page.wait_for_selector(PAGES["overview"])
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("#key")
    assert page.evaluate("sessionStorage.length") == 0


def test_a_proxy_key_gets_a_read_only_view_saying_why(ui_server, tab):
    server = ui_server()  # with adminKeys: a proxy key may not read the admin API
    server.chat()
    page = tab.open(server.url + "/ui/")
    sign_in(page, PROXY_KEY)
    page.wait_for_selector(PAGES["limits"])  # it lands on what it may see
    assert page.inner_text("#access") == "proxy key: read-only"
    assert "Read-only: this is a proxy key" in page.inner_text("#banner")
    visit(page, server.url, "chains")
    assert page.locator("#create-chain").count() == 0
    assert page.get_by_role("button", name="Test").first.is_disabled()
    page.goto(f"{server.url}/ui/#/overview")
    page.wait_for_selector("main .banner")
    assert "needs an admin key" in page.inner_text("main")
    visit(page, server.url, "playground")


def test_a_proxy_key_without_admin_keys_reads_everything_and_edits_nothing(ui_server, tab):
    server = ui_server(admin_keys=False)
    page = tab.open(server.url + "/ui/")
    sign_in(page, PROXY_KEY)
    page.wait_for_selector(PAGES["overview"])
    assert page.inner_text("#access") == "read-only (key#1)"
    assert "no settings.adminKeys" in page.inner_text("#banner")
    visit(page, server.url, "providers")
    add = page.locator("#add-provider")
    assert add.is_disabled() and "may read the admin API but not change" in add.get_attribute(
        "title"
    )
    visit(page, server.url, "limits")


def test_server_values_render_as_text(ui_server, tab):
    server = ui_server(keys=False, gamma_name=XSS)
    dialogs: list[str] = []
    tab.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    server.chat(model=XSS)  # an unknown model goes to the default chain, and is logged as asked
    page = tab.open(server.url + "/ui/")
    visit(page, server.url, "providers")
    assert XSS in page.inner_text("tr[data-provider=gamma]")
    visit(page, server.url, "requests")
    page.locator(".requests-table a").first.click()
    page.wait_for_selector(".trail")
    assert XSS in page.inner_text("main")
    visit(page, server.url, "config")
    assert XSS in page.inner_text("#config-yaml")
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == [] and tab.errors == []


def test_the_ui_is_served_with_a_strict_content_security_policy(ui_server, tab):
    server = ui_server(keys=False)
    response = tab.page.goto(server.url + "/ui/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy
    # The policy holds in the browser: an inline script does not run.
    tab.page.wait_for_selector(PAGES["overview"])
    tab.page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        " document.body.appendChild(s); }"
    )
    assert tab.page.evaluate("window.ran") is None
    assert any("Content Security Policy" in error for error in tab.errors)


def test_every_page_fits_a_phone_in_the_dark(ui_server, browser):
    server = ui_server(keys=False)
    server.chat()
    context = browser.new_context(viewport={"width": 390, "height": 800}, color_scheme="dark")
    page = context.new_page()
    try:
        for name in PAGES:
            visit(page, server.url, name)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} is wider than 390 px by {overflow} px"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 20, 27)"  # the dark scheme's
    finally:
        context.close()
