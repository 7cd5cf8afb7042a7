"""The HTTP server: the Sanic app and everything that meets a client.

Owns: the app factory and its typed context (`app`), the proxy route
(`completions`) and a client's gate before it (`client_gate`), the admin,
client, stats, rate-limit and budget routes (`admin`, `client_routes`,
`stats_routes`, `ratelimit_report`, `budgets`), the OpenAPI document (`openapi`), who
may ask (`auth`) and what a web page may not (`guard`), client connection
limits (`connections`), OpenAI-shaped errors (`errors`), serving on a socket
(`serving`), hot reload (`reloader`), metrics and logs (`metrics`, `logs`),
and the web UI's files (`web_ui`).

May import: every other room but `chain429.fakes`. The only room that
imports Sanic.
"""
