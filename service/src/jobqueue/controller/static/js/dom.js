// Building the page from data without ever parsing it as HTML: text goes in as text
// nodes, attributes are set one by one.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

export function show(node, text) {
  node.textContent = text ?? "";
  node.hidden = !text;
}

export const FINISHED = new Set(["succeeded", "failed", "timed_out", "cancelled", "lost"]);
export const STATES = ["queued", "running", ...FINISHED];

export function stateBadge(state) {
  return el("span", { class: `state state-${STATES.includes(state) ? state : "other"}` },
    String(state).replace("_", " "));
}
