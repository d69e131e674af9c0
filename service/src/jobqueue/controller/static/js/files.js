// A job's files as folders to walk through, each file to view (if small) or download.

import { api, apiJson, download, jobPath, segments } from "./api.js";
import { el } from "./dom.js";
import { bytes } from "./format.js";

const VIEW_MAX = 256 * 1024;

export class FileBrowser {
  constructor(jobId, report) {
    this.jobId = jobId;
    this.report = report;
    this.folder = "";
    this.files = [];
    this.crumbs = el("p", { class: "crumbs", id: "files-path" });
    this.body = el("tbody");
    this.table = el("table", { id: "files", class: "files" },
      el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", { class: "num" }, "Size"),
        el("th"))), this.body);
    this.viewer = el("pre", { class: "file-view", id: "file-view", hidden: true });
    this.viewerTitle = el("h4", { id: "file-view-name", hidden: true });
    this.node = el("section", { id: "files-section" },
      this.crumbs, this.table, this.viewerTitle, this.viewer);
  }

  async load() {
    const answer = await apiJson(`${jobPath(this.jobId)}/files`);
    this.files = answer.files;
    this.render();
  }

  open(folder) {
    this.folder = folder;
    this.render();
  }

  render() {
    const prefix = this.folder ? this.folder + "/" : "";
    const folders = new Map();
    const here = [];
    for (const file of this.files) {
      if (!file.path.startsWith(prefix)) continue;
      const rest = file.path.slice(prefix.length);
      const slash = rest.indexOf("/");
      if (slash < 0) here.push(file);
      else {
        const name = rest.slice(0, slash);
        const entry = folders.get(name) ?? { count: 0, size: 0 };
        entry.count += 1;
        entry.size += file.size;
        folders.set(name, entry);
      }
    }
    const parts = this.folder ? this.folder.split("/") : [];
    const top = el("a", { href: "#", class: "crumb" }, "job folder");
    top.addEventListener("click", (e) => { e.preventDefault(); this.open(""); });
    this.crumbs.replaceChildren(top, ...parts.flatMap((part, i) => {
      const link = el("a", { href: "#", class: "crumb" }, part);
      link.addEventListener("click", (e) => { e.preventDefault(); this.open(parts.slice(0, i + 1).join("/")); });
      return [" / ", link];
    }));
    const rows = [];
    for (const [name, entry] of [...folders].sort(([a], [b]) => a.localeCompare(b))) {
      const link = el("a", { href: "#", class: "folder" }, name + "/");
      link.addEventListener("click", (e) => { e.preventDefault(); this.open(prefix + name); });
      rows.push(el("tr", {}, el("td", {}, link),
        el("td", { class: "num" }, `${entry.count} file(s), ${bytes(entry.size)}`), el("td")));
    }
    for (const file of here.sort((a, b) => a.path.localeCompare(b.path))) {
      const name = file.path.slice(prefix.length);
      const get = el("button", { type: "button", class: "download" }, "Download");
      get.addEventListener("click", () => this.guard(
        download(`${jobPath(this.jobId)}/files/${segments(file.path)}`, name)));
      const view = el("button", { type: "button", class: "view", disabled: file.size > VIEW_MAX },
        "View");
      view.addEventListener("click", () => this.guard(this.view(file)));
      rows.push(el("tr", { dataset: { path: file.path } }, el("td", {}, name),
        el("td", { class: "num" }, bytes(file.size)), el("td", {}, view, " ", get)));
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 3 }, "(no files)")));
    this.body.replaceChildren(...rows);
  }

  async view(file) {
    const response = await api(`${jobPath(this.jobId)}/files/${segments(file.path)}`);
    const text = new TextDecoder().decode(await response.arrayBuffer());
    this.viewerTitle.textContent = file.path;
    this.viewer.textContent = text;
    this.viewer.hidden = this.viewerTitle.hidden = false;
  }

  guard(promise) {
    promise.catch((exc) => this.report(exc));
  }
}
