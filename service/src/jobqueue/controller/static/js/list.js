// The job list: filters, one page of jobs at a time (the API's cursors), refreshed
// while any job on it is unfinished.

import { apiJson } from "./api.js";
import { FINISHED, STATES, el, stateBadge } from "./dom.js";
import { arrayLabel, duration, localTime, memory, reason, runtime } from "./format.js";

const REFRESH_MS = 3000;
const IDLE_REFRESH_MS = 20000; // jobs submitted from elsewhere show up in the end too
const PAGE_SIZES = [20, 50, 100, 200];

function jobLink(job) {
  return el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "job-name" }, job.name);
}

// The date, then the time and zone (a line each when the column is narrow).
function timeCell(iso) {
  const [date, time] = localTime(iso).split(", ");
  return el("td", { title: iso ?? "", class: "time" }, date ?? "", time ? ", " : "",
    time ? el("span", { class: "nowrap" }, time) : "");
}

function row(job, withOwner) {
  const array = job.array && typeof job.array === "object"
    ? el("a", { href: `#/?array=${encodeURIComponent(job.array.id)}` }, arrayLabel(job.array))
    : "";
  return el("tr", { dataset: { id: job.id, state: job.state } },
    el("td", {}, jobLink(job)),
    withOwner ? el("td", {}, job.owner) : null,
    el("td", {}, stateBadge(job.state)),
    el("td", { class: "reason" }, reason(job)),
    timeCell(job.created_at),
    timeCell(job.started_at),
    el("td", { class: "num" }, duration(runtime(job))),
    el("td", { class: "num" }, job.cpus),
    el("td", { class: "num" }, memory(job)),
    el("td", {}, array),
    el("td", { class: "id" }, el("code", { title: job.id }, String(job.id).slice(0, 8))));
}

// The view's filters live in the address (#/?state=running&name=x&limit=50&array=ID),
// so the back button and a bookmark give the same list.
function readFilters(params) {
  const limit = Number.parseInt(params.get("limit") ?? "", 10);
  return {
    state: params.get("state") ?? "",
    name: params.get("name") ?? "",
    array: params.get("array") ?? "",
    all: params.get("all") === "1",
    limit: Number.isInteger(limit) && limit >= 1 && limit <= 500 ? limit : 50,
  };
}

function writeFilters(filters) {
  const params = new URLSearchParams();
  if (filters.state) params.set("state", filters.state);
  if (filters.name) params.set("name", filters.name);
  if (filters.array) params.set("array", filters.array);
  if (filters.all) params.set("all", "1");
  if (filters.limit !== 50) params.set("limit", String(filters.limit));
  const query = params.toString();
  const hash = query ? `#/?${query}` : "#/";
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

function query(filters, cursor) {
  const params = new URLSearchParams({ limit: String(filters.limit) });
  if (filters.state === "unfinished") {
    STATES.filter((s) => !FINISHED.has(s)).forEach((s) => params.append("state", s));
  }
  else if (filters.state === "finished") FINISHED.forEach((s) => params.append("state", s));
  else if (filters.state) params.set("state", filters.state);
  if (filters.name) params.set("name", filters.name);
  if (filters.array) params.set("array", filters.array);
  if (filters.all) params.set("all", "1");
  if (cursor) params.set("cursor", cursor);
  return `/jobs?${params}`;
}

function filterForm(filters, me) {
  const state = el("select", { name: "state", id: "filter-state" },
    el("option", { value: "" }, "any"),
    el("option", { value: "unfinished" }, "unfinished"),
    el("option", { value: "finished" }, "finished"),
    STATES.map((s) => el("option", { value: s }, s.replace("_", " "))));
  state.value = filters.state;
  const name = el("input", { name: "name", id: "filter-name", type: "search", size: 20,
                             placeholder: "part of the name" });
  name.value = filters.name;
  const sizes = PAGE_SIZES.includes(filters.limit) ? PAGE_SIZES : [...PAGE_SIZES, filters.limit];
  const limit = el("select", { name: "limit", id: "filter-limit" },
    sizes.sort((a, b) => a - b).map((n) => el("option", { value: String(n) }, n)));
  limit.value = String(filters.limit);
  const all = me.role === "admin"
    ? el("label", {}, el("input", { type: "checkbox", id: "filter-all", checked: filters.all }),
      " everyone's jobs")
    : null;
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "State ", state), el("label", {}, "Name ", name),
    el("label", {}, "Per page ", limit), all,
    filters.array ? el("span", { class: "chip" }, "array ", el("code", {}, filters.array), " ",
      el("a", { href: "#/", id: "clear-array" }, "(all jobs)")) : null,
    el("button", {}, "Filter"));
  const apply = (event) => {
    event.preventDefault();
    writeFilters({ state: state.value, name: name.value.trim(), array: filters.array,
                   all: Boolean(form.querySelector("#filter-all")?.checked),
                   limit: Number(limit.value) });
  };
  form.addEventListener("submit", apply);
  for (const control of [state, limit, form.querySelector("#filter-all")]) {
    control?.addEventListener("change", apply);
  }
  return form;
}

export function jobList(container, params, { me, report }) {
  const filters = readFilters(params);
  const withOwner = me.role === "admin" && filters.all;
  const cursors = [null]; // cursors[i]: where page i starts
  let page = 0;
  let timer = null;
  let stopped = false;
  let loaded = false;

  const body = el("tbody");
  const table = el("table", { id: "jobs", class: "jobs" },
    el("thead", {}, el("tr", {},
      ["Name", withOwner ? "Owner" : null, "State", "Why", "Submitted", "Started", "Runtime",
       "CPUs", "Memory", "Array", "Id"].filter(Boolean).map((h) => el("th", {}, h)))),
    body);
  const empty = el("p", { id: "no-jobs", hidden: true }, "No jobs match.");
  const status = el("p", { class: "muted", id: "list-status" });
  const newer = el("button", { type: "button", id: "page-newer" }, "← Newer");
  const older = el("button", { type: "button", id: "page-older" }, "Older →");
  const pageLabel = el("span", { id: "page-number" });
  const refresh = el("button", { type: "button", id: "refresh" }, "Refresh");

  async function load() {
    clearTimeout(timer);
    timer = null;
    if (document.hidden && loaded) { // a tab in the background asks nothing
      timer = setTimeout(load, REFRESH_MS);
      return;
    }
    try {
      const answer = await apiJson(query(filters, cursors[page]));
      if (stopped) return;
      loaded = true;
      body.replaceChildren(...answer.jobs.map((job) => row(job, withOwner)));
      table.hidden = answer.jobs.length === 0;
      empty.hidden = answer.jobs.length > 0;
      cursors.length = page + 1;
      if (answer.next) cursors.push(answer.next);
      newer.disabled = page === 0;
      older.disabled = !answer.next;
      pageLabel.textContent = `page ${page + 1}`;
      const running = answer.jobs.some((job) => !FINISHED.has(job.state));
      const every = running ? REFRESH_MS : IDLE_REFRESH_MS;
      status.textContent = `Updated ${new Date().toLocaleTimeString()}; ` +
        `refreshing every ${every / 1000} s` + (running ? " while jobs are unfinished." : ".");
      report(null);
      timer = setTimeout(load, every);
    } catch (exc) {
      if (stopped) return;
      report(exc);
      timer = setTimeout(load, REFRESH_MS * 3);
    }
  }

  newer.addEventListener("click", () => { page = Math.max(0, page - 1); load(); });
  older.addEventListener("click", () => { if (cursors[page + 1]) { page += 1; load(); } });
  refresh.addEventListener("click", load);

  container.replaceChildren(
    el("h2", {}, withOwner ? "All jobs" : "Your jobs"),
    filterForm(filters, me), status, table, empty,
    el("nav", { class: "pager" }, newer, pageLabel, older, refresh));
  load();
  return () => { stopped = true; clearTimeout(timer); };
}
