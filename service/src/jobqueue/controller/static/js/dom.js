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

// The job states and those that end a job, as the server defines them (index.html).
export const STATES = JSON.parse(document.body.dataset.states);
export const FINISHED = new Set(JSON.parse(document.body.dataset.finished));

export function stateBadge(state) {
  return el("span", { class: `state state-${STATES.includes(state) ? state : "other"}` },
    String(state).replace("_", " "));
}
