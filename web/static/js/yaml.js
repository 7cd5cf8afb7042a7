// YAML text for JSON data: the config as the server reads it, for reading and editing.
//
// Block style, keys in the server's order; a string is quoted (as JSON, which
// is valid YAML) whenever it could read as anything but that string: a
// number, a boolean, null, an empty string, leading or trailing blanks, or
// characters YAML gives a meaning (`: `, ` #`, a leading `-`, `[`, `*`, ...).

const PLAIN_FIRST = /^[A-Za-z0-9_./$(~+^=\u0080-\uffff][^\n\r\t]*$/;
const SPECIAL = /(: |:$| #|^[-?:,[\]{}#&*!|>'"%@`]|[\u0000-\u001f\u007f])/;
const RESERVED = /^(true|false|yes|no|on|off|y|n|null|~|\.inf|-\.inf|\.nan)$/i;
const NUMBERISH = /^[-+]?(\d[\d_]*(\.\d*)?([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|0x[0-9a-fA-F_]+|0o[0-7_]+|\d+:[0-5]?\d(:[0-5]?\d)*)$/;

function scalar(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean" || typeof value === "number") return String(value);
  const text = String(value);
  const plain = text !== "" && text.trim() === text && PLAIN_FIRST.test(text) && !SPECIAL.test(text)
    && !RESERVED.test(text) && !NUMBERISH.test(text) && !/^\d{4}-\d\d-\d\d/.test(text);
  return plain ? text : JSON.stringify(text);
}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

function lines(value, indent) {
  const pad = " ".repeat(indent);
  const out = [];
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isObject(item) && Object.keys(item).length) {
        const inner = lines(item, indent + 2);
        out.push(`${pad}- ${inner[0].trimStart()}`, ...inner.slice(1));
      } else if (Array.isArray(item) && item.length) {
        out.push(`${pad}-`, ...lines(item, indent + 2));
      } else {
        out.push(`${pad}- ${inline(item)}`);
      }
    }
    return out;
  }
  for (const [key, item] of Object.entries(value)) {
    if ((isObject(item) && Object.keys(item).length) || (Array.isArray(item) && item.length)) {
      out.push(`${pad}${scalar(key)}:`, ...lines(item, Array.isArray(item) ? indent : indent + 2));
    } else {
      out.push(`${pad}${scalar(key)}: ${inline(item)}`);
    }
  }
  return out;
}

function inline(value) {
  if (Array.isArray(value)) return "[]";
  if (isObject(value)) return "{}";
  return scalar(value);
}

export function toYaml(data) {
  if (!isObject(data) || !Object.keys(data).length) return "{}\n";
  return `${lines(data, 0).join("\n")}\n`;
}
