// The submit form: a script or a folder, how to run it, and the limits it asks for.
// It sends what `jobqueue submit` sends: POST /jobs with a `spec` JSON part and one
// `files` part per file, named by its path in the job.

import { apiJson } from "./api.js";
import { el } from "./dom.js";
import { bytes } from "./format.js";

// As the command line client: never useful on a worker, and often large.
const SKIPPED_DIRS = new Set(["__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache"]);
const SKIPPED_SUFFIXES = [".pyc", ".pyo"];

// "90", "1:30" (min:s) or "1:30:00" (h:min:s) into seconds; null when blank.
export function parseWalltime(text) {
  const value = text.trim();
  if (!value) return null;
  if (!/^\d+(:\d{1,2}){0,2}$/.test(value)) {
    throw new Error("wall time: give seconds, MM:SS or HH:MM:SS");
  }
  return value.split(":").reduce((total, part) => total * 60 + Number(part), 0);
}

function wholeNumber(input, label) {
  const value = input.value.trim();
  if (!value) return null;
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    throw new Error(`${label}: give a whole number of at least 1`);
  }
  return Number(value);
}

// The files of a folder upload as {path in the job: File}, the folder's own name
// taken off the front of each path.
function folderFiles(fileList) {
  const files = new Map();
  for (const file of fileList) {
    const parts = (file.webkitRelativePath || file.name).split("/").slice(1);
    if (!parts.length || parts.some((p) => SKIPPED_DIRS.has(p))) continue;
    if (SKIPPED_SUFFIXES.some((s) => file.name.endsWith(s))) continue;
    files.set(parts.join("/"), file);
  }
  return files;
}

// Also where crypto.randomUUID is missing (plain HTTP to another host than this one).
function randomKey() {
  const bytes16 = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes16, (b) => b.toString(16).padStart(2, "0")).join("");
}

function folderName(fileList) {
  const first = fileList[0];
  return first ? (first.webkitRelativePath || first.name).split("/")[0] : "";
}

export function submitForm(container, _params, { report, notify }) {
  const kind = (value, text, checked) => el("label", {},
    el("input", { type: "radio", name: "kind", value, id: `kind-${value}`, checked }), " ", text);
  const script = el("input", { type: "file", id: "script-file", accept: ".py,text/x-python" });
  const folder = el("input", { type: "file", id: "folder-files", multiple: true });
  folder.webkitdirectory = true;
  const entry = el("select", { id: "entry", required: true });
  const name = el("input", { id: "name", maxlength: 200, size: 40 });
  const args = el("textarea", { id: "args", rows: 3, cols: 40,
                                placeholder: "one argument per line" });
  const cpus = el("input", { id: "cpus", type: "number", min: 1, step: 1, value: "1" });
  const walltime = el("input", { id: "walltime", size: 10, placeholder: "HH:MM:SS" });
  const memoryInput = el("input", { id: "memory", type: "number", min: 16, step: 1,
                                    placeholder: "default" });
  const outputLimit = el("input", { id: "output-limit", type: "number", min: 1, step: 1,
                                    placeholder: "default" });
  const array = el("input", { id: "array", size: 12, placeholder: "e.g. 0-9%2" });
  const summary = el("p", { class: "muted", id: "upload-summary" }, "No files chosen.");
  const submit = el("button", { id: "submit-job" }, "Submit");
  const scriptRow = el("p", { id: "script-row" }, el("label", {}, "Script ", script));
  const folderRow = el("p", { id: "folder-row", hidden: true },
    el("label", {}, "Folder ", folder));
  let files = new Map();
  let defaultName = "";

  function chosen() {
    const isFolder = container.querySelector("#kind-folder").checked;
    scriptRow.hidden = isFolder;
    folderRow.hidden = !isFolder;
    if (isFolder) {
      files = folderFiles(folder.files);
      defaultName = folderName(folder.files);
    } else {
      const file = script.files[0];
      files = file ? new Map([[file.name, file]]) : new Map();
      defaultName = file ? file.name : "";
    }
    const paths = [...files.keys()].sort();
    const topLevel = paths.filter((p) => !p.includes("/") && p.endsWith(".py"));
    const candidates = [...topLevel, ...paths.filter((p) => !topLevel.includes(p))];
    entry.replaceChildren(...candidates.map((p) => el("option", { value: p }, p)));
    entry.value = topLevel.length === 1 || !isFolder ? candidates[0] ?? "" : "";
    if (!entry.value && candidates.length) {
      entry.prepend(el("option", { value: "", disabled: true }, "choose the script to run"));
      entry.value = "";
    }
    name.placeholder = defaultName || "the script's name";
    let total = 0;
    for (const file of files.values()) total += file.size;
    summary.textContent = files.size
      ? `${files.size} file(s), ${bytes(total)}.` : "No files chosen.";
  }

  function spec() {
    if (!files.size) throw new Error("choose a script or a folder first");
    if (!entry.value) throw new Error("choose the entry script: the file the worker runs");
    const body = { name: name.value.trim() || defaultName || entry.value, entry: entry.value,
                   args: args.value.split("\n").map((a) => a.replace(/\r$/, "")).filter((a) => a !== "") };
    const numbers = { cpus: wholeNumber(cpus, "CPUs"), walltime: parseWalltime(walltime.value),
                      memory: wholeNumber(memoryInput, "memory"),
                      output_limit: wholeNumber(outputLimit, "output limit") };
    for (const [key, value] of Object.entries(numbers)) if (value !== null) body[key] = value;
    if (array.value.trim()) body.array = array.value.trim();
    return body;
  }

  const form = el("form", { id: "submit-form", class: "submit" },
    el("fieldset", {}, el("legend", {}, "What to run"),
      el("p", {}, kind("script", "a script file", true), " ", kind("folder", "a folder")),
      scriptRow, folderRow, summary,
      el("p", {}, el("label", {}, "Entry script ", entry)),
      el("p", {}, el("label", {}, "Arguments ", args))),
    el("fieldset", {}, el("legend", {}, "Job"),
      el("p", {}, el("label", {}, "Name ", name)),
      el("p", {}, el("label", {}, "CPUs ", cpus), " ",
        el("label", {}, "Wall time ", walltime), " ",
        el("label", {}, "Memory (MiB) ", memoryInput), " ",
        el("label", {}, "Output limit (MiB) ", outputLimit)),
      el("p", {}, el("label", {}, "Array ", array),
        el("span", { class: "muted" },
          " one job per index: 0-9, or 0-9%2 for at most 2 running at once"))),
    el("p", {}, submit));

  for (const input of [script, folder, ...form.querySelectorAll("input[name=kind]")]) {
    input.addEventListener("change", chosen);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = spec();
    } catch (exc) {
      report(exc);
      return;
    }
    const data = new FormData();
    data.append("spec", JSON.stringify(body));
    for (const [path, file] of files) data.append("files", file, path);
    submit.disabled = true;
    notify(`Uploading ${files.size} file(s)…`);
    try {
      // One key per press of the button: a retry of a lost answer makes no second job.
      const job = await apiJson("/jobs", { method: "POST", body: data,
                                           headers: { "Idempotency-Key": randomKey() } });
      notify(`Submitted “${job.name ?? body.name}”.`);
      location.hash = job.array?.id ? `#/?array=${encodeURIComponent(job.array.id)}`
        : `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (exc) {
      notify(null);
      report(exc);
    } finally {
      submit.disabled = false;
    }
  });

  container.replaceChildren(el("h2", {}, "Submit a job"), form);
  chosen();
  return () => {};
}
