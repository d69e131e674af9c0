// One job: every field, its live logs, its files, and cancel / rerun (a task of an
// array) / delete / download.

import { ApiError, api, apiJson, download, jobPath } from "./api.js";
import { FINISHED, el, stateBadge } from "./dom.js";
import { arrayLabel, bytes, duration, localTime, memory, reason, runtime } from "./format.js";
import { FileBrowser } from "./files.js";
import { LogFollower } from "./logs.js";

const POLL_MS = 1500;
const FILES_EVERY_MS = 10_000; // a running job's file list, less often than its log
// The tasks a rerun takes by default (the API's arrays.RERUN_STATES).
const RERUN_STATES = new Set(["failed", "timed_out", "lost"]);

const mib = (n) => (typeof n === "number" ? bytes(n * 1024 * 1024) : "");
// "1 min 05 s (65 s)"; measured times to the millisecond, not to the float's last digit.
const exact = (n) => (Number.isInteger(n) ? String(n) : n.toFixed(n < 10 ? 3 : 1));
const seconds = (n) => (typeof n === "number" ? `${duration(n)} (${exact(n)} s)` : "");
const jobRef = (id) => el("a", { href: `#/jobs/${encodeURIComponent(id)}` }, String(id));
// An `after` entry: an id (afterok) or CONDITION:ID; the condition stays text.
const afterRef = (entry) => {
  const [condition, id] = String(entry).includes(":") ? String(entry).split(":") : ["", entry];
  return condition ? el("span", {}, `${condition}:`, jobRef(id)) : jobRef(id);
};
const jobRefs = (ref) => (v) => (Array.isArray(v) && v.length
  ? el("span", {}, v.flatMap((id, i) => (i ? [", ", ref(id)] : [ref(id)]))) : "");

// The fields in the order a person reads them; any other field the API adds later is
// shown after these, as JSON text.
const FIELDS = [
  ["id", "Id", (v) => el("code", {}, v)],
  ["name", "Name"],
  ["owner", "Owner"],
  ["state", "State", (v) => stateBadge(v)],
  ["queue_position", "Place in queue"],
  ["pending_reason", "Waiting because"],
  ["message", "Message"],
  ["exit_code", "Exit code"],
  ["limit", "Limit reached"],
  ["cancel_requested", "Cancel requested", (v) => (v ? "yes" : "no")],
  ["entry", "Entry", (v) => el("code", {}, v)],
  ["args", "Arguments", (v) => (Array.isArray(v) && v.length
    ? el("ol", { class: "args" }, v.map((a) => el("li", {}, el("code", {}, a)))) : "(none)")],
  ["env", "Environment", (v) => (v && typeof v === "object" && Object.keys(v).length
    ? el("ul", { class: "args" }, Object.entries(v).map(([name, value]) =>
      el("li", {}, el("code", {}, `${name}=${value}`)))) : "")],
  ["cpus", "CPUs"],
  ["memory", "Memory limit", mib],
  ["walltime", "Wall time limit", seconds],
  ["output_limit", "Output limit", mib],
  ["array", "Array", (v) => (v && typeof v === "object"
    ? el("a", { href: `#/?array=${encodeURIComponent(v.id)}` }, arrayLabel(v)) : "")],
  ["after", "Runs after", jobRefs(afterRef)],
  ["inputs_from", "Inputs from", jobRefs(jobRef)],
  ["worker", "Worker"],
  ["attempts", "Attempts"],
  ["created_at", "Submitted", localTime],
  ["started_at", "Started", localTime],
  ["finished_at", "Finished", localTime],
];
const SKIP = new Set(["links", "accounting"]);

function fieldRows(job) {
  const rows = [];
  const add = (label, value, key) => {
    if (value === null || value === undefined || value === "") return;
    rows.push(el("tr", { dataset: { field: key } }, el("th", {}, label), el("td", {}, value)));
  };
  for (const [key, label, show] of FIELDS) {
    if (!(key in job)) continue;
    const value = job[key];
    if (value === null || value === undefined || (key === "message" && !value)) continue;
    add(label, show ? show(value) : String(value), key);
  }
  add("Runtime", duration(runtime(job)), "runtime");
  const acc = job.accounting;
  if (acc && typeof acc === "object") {
    add("CPU time", seconds(acc.cpu_seconds), "accounting.cpu_seconds");
    add("Peak memory", memory(job), "accounting.peak_memory");
    add("Wall time used", seconds(acc.wall_seconds), "accounting.wall_seconds");
    add("Ended by signal", acc.signal, "accounting.signal");
  }
  const known = new Set(FIELDS.map(([key]) => key));
  for (const [key, value] of Object.entries(job)) {
    if (known.has(key) || SKIP.has(key) || value === null) continue;
    add(key, typeof value === "string" ? value : JSON.stringify(value), key);
  }
  return rows;
}

export function jobPage(container, id, { report, notify }) {
  let stopped = false;
  let timer = null;
  let job = null;
  const title = el("h2", { id: "job-title" }, "Job ", el("code", {}, id));
  const summary = el("p", { id: "job-summary" });
  const fields = el("tbody");
  const cancel = el("button", { type: "button", id: "cancel-job", hidden: true }, "Cancel job");
  const rerun = el("button", { type: "button", id: "rerun-array", hidden: true },
    "Run the array's failed tasks again");
  const remove = el("button", { type: "button", id: "delete-job", hidden: true, class: "danger" },
    "Delete job");
  const results = el("button", { type: "button", id: "download-results" },
    "Download results (.tar.gz)");
  const outputs = el("button", { type: "button", id: "download-outputs" },
    "Download only the files it wrote");
  const logs = [new LogFollower(id, "stdout", report), new LogFollower(id, "stderr", report)];
  const browser = new FileBrowser(id, report);

  function render() {
    const finished = FINISHED.has(job.state);
    title.replaceChildren(el("span", { class: "job-name" }, job.name), " ", stateBadge(job.state));
    summary.textContent = reason(job);
    fields.replaceChildren(...fieldRows(job));
    cancel.hidden = finished;
    cancel.disabled = Boolean(job.cancel_requested);
    remove.hidden = !finished;
    rerun.hidden = !(job.array && RERUN_STATES.has(job.state));
  }

  let filesLoaded = 0;

  async function poll() {
    timer = null;
    if (document.hidden && job) { // a tab in the background asks nothing
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    try {
      job = await apiJson(jobPath(id));
      if (stopped) return;
      render();
      for (const log of logs) await log.poll();
      // The files change while the job runs, and once more when its results arrive.
      if (FINISHED.has(job.state) || Date.now() - filesLoaded > FILES_EVERY_MS) {
        await browser.load();
        filesLoaded = Date.now();
      }
      if (stopped) return;
      report(null);
      if (!FINISHED.has(job.state)) timer = setTimeout(poll, POLL_MS);
    } catch (exc) {
      if (stopped) return;
      if (exc instanceof ApiError && exc.status === 404) {
        container.replaceChildren(el("h2", {}, "No such job"),
          el("p", {}, "There is no job ", el("code", {}, id), " that you may see."),
          el("p", {}, el("a", { href: "#/" }, "Back to the jobs")));
        return;
      }
      report(exc);
      timer = setTimeout(poll, POLL_MS * 3);
    }
  }

  cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel the job “${job.name}”?`)) return;
    try {
      job = await apiJson(`${jobPath(id)}/cancel`, { method: "POST" });
      render();
      notify(job.state === "cancelled" ? "The job is cancelled."
        : "Cancel requested: the worker stops the job at its next heartbeat.");
      clearTimeout(timer);
      poll();
    } catch (exc) {
      report(exc);
    }
  });
  rerun.addEventListener("click", async () => {
    if (!window.confirm(`Run the failed tasks of the array “${job.name}” again, as a new array?`)) return;
    try {
      const made = await apiJson(`/arrays/${encodeURIComponent(job.array.id)}/rerun`,
        { method: "POST" });
      notify(`${made.jobs.length} task(s) run again as array ${made.array.id}.`);
      location.hash = `#/?array=${encodeURIComponent(made.array.id)}`;
    } catch (exc) {
      report(exc);
    }
  });
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Delete the job “${job.name}” and all its files? This cannot be undone.`)) return;
    try {
      await api(jobPath(id), { method: "DELETE" });
      notify(`Deleted the job “${job.name}”.`);
      location.hash = "#/";
    } catch (exc) {
      report(exc);
    }
  });
  results.addEventListener("click", () => {
    download(`${jobPath(id)}/results`, `${id}-results.tar.gz`).catch(report);
  });
  outputs.addEventListener("click", () => {
    download(`${jobPath(id)}/results?inputs=0`, `${id}-outputs.tar.gz`).catch(report);
  });

  container.replaceChildren(
    el("p", {}, el("a", { href: "#/" }, "← All jobs")),
    title, summary,
    el("p", { class: "actions" }, cancel, " ", rerun, " ", remove, " ", results, " ", outputs),
    el("table", { class: "fields", id: "job-fields" }, fields),
    el("h3", {}, "Log"), el("div", { class: "logs" }, logs.map((l) => l.node)),
    el("h3", {}, "Files"), browser.node);
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
