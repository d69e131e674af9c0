// The API description: fetched with the token (the document is not public), shown as
// a table of its routes and as JSON, and offered as a file.

import { apiJson, saveBlob } from "./api.js";
import { el } from "./dom.js";

const METHODS = ["get", "post", "put", "patch", "delete"];

export function apiDoc(container, _params, { report }) {
  let stopped = false;
  const body = el("tbody");
  const json = el("pre", { class: "json", id: "openapi-json" });
  const save = el("button", { type: "button", id: "download-openapi", disabled: true },
    "Download openapi.json");
  container.replaceChildren(el("h2", {}, "API description"),
    el("p", {}, "The HTTP API under ", el("code", {}, "/api/v1"), ": every request carries ",
      el("code", {}, "Authorization: Bearer <token>"), ". ", save),
    el("table", { class: "routes", id: "routes" },
      el("thead", {}, el("tr", {}, ["Method", "Path", "What"].map((h) => el("th", {}, h)))),
      body),
    el("details", {}, el("summary", {}, "The whole document (OpenAPI 3)"), json));

  apiJson("/openapi.json").then((doc) => {
    if (stopped) return;
    const text = JSON.stringify(doc, null, 2);
    json.textContent = text;
    save.disabled = false;
    save.addEventListener("click", () => {
      saveBlob(new Blob([text], { type: "application/json" }), "openapi.json");
    });
    const rows = [];
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        rows.push(el("tr", {}, el("td", {}, el("code", {}, method.toUpperCase())),
          el("td", {}, el("code", {}, path)), el("td", {}, item[method].summary ?? "")));
      }
    }
    body.replaceChildren(...rows);
    report(null);
  }, report);
  return () => { stopped = true; };
}
