// The page: sign-in with a token, kept by the browser for every tab in an HttpOnly
// cookie, and a view per address (#/ jobs, #/jobs/ID one job, #/submit, #/api).

import { UNAUTHORIZED, api, apiJson } from "./api.js";
import { apiDoc } from "./apidoc.js";
import { byId, show } from "./dom.js";
import { jobPage } from "./job.js";
import { jobList } from "./list.js";
import { submitForm } from "./submit.js";

const welcome = byId("welcome");
let me = null;
let stopView = null;

function report(exc) {
  show(byId("error"), exc ? exc.message || String(exc) : null);
}

let noticeTimer = null;

// A short note that outlives one change of view (a submit goes on to its job's page).
function notify(text) {
  clearTimeout(noticeTimer);
  show(byId("notice"), text);
  if (text) noticeTimer = setTimeout(() => show(byId("notice"), null), 10_000);
}

function signedIn(user) {
  me = user;
  byId("sign-in").hidden = true;
  byId("who").hidden = false;
  byId("nav").hidden = false;
  byId("who-name").textContent = `Signed in as ${user.name}` +
    (user.role === "user" ? "" : ` (${user.role})`);
}

function signedOut(message) {
  if (me) api("/session", { method: "DELETE" }).catch(() => {});  // clears the cookies
  me = null;
  stopView?.();
  stopView = null;
  byId("sign-in").hidden = false;
  byId("who").hidden = true;
  byId("nav").hidden = true;
  byId("token").value = "";
  byId("view").replaceChildren(welcome);
  notify(null);
  report(message ? new Error(message) : null);
}

function route() {
  stopView?.();
  stopView = null;
  if (!me) return;
  const hash = location.hash || "#/";
  const [path, query = ""] = hash.slice(1).split("?");
  const params = new URLSearchParams(query);
  const view = byId("view");
  const context = { me, report, notify };
  const job = /^\/jobs\/([^/]+)$/.exec(path);
  if (job) stopView = jobPage(view, decodeURIComponent(job[1]), context);
  else if (path === "/submit") stopView = submitForm(view, params, context);
  else if (path === "/api") stopView = apiDoc(view, params, context);
  else stopView = jobList(view, params, context);
}

async function signIn(candidate) {
  try {
    signedIn(await apiJson("/session", { method: "POST", with_token: candidate }));
    report(null);
    route();
  } catch (exc) {
    const why = exc.status === 401 ? `the token was not accepted (${exc.message})`
      : exc.status === 403 ? "that is a worker's token: sign in with a user's token"
        : exc.message;
    signedOut(`Sign-in failed: ${why}.`);
  }
}

byId("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const candidate = byId("token").value.trim();
  if (candidate) signIn(candidate);
});
byId("sign-out").addEventListener("click", () => {
  signedOut(null);
  notify("Signed out: this browser forgot the token.");
});
window.addEventListener(UNAUTHORIZED, (event) => {
  signedOut(`Signed out: the token is no longer accepted (${event.detail}).`);
});
window.addEventListener("hashchange", () => {
  report(null);
  route();
});

// Another tab, or a reload, finds the browser signed in: no sign-in form meanwhile,
// unless it is not.
byId("sign-in").hidden = true;
apiJson("/me", { quiet: true }).then((user) => {
  signedIn(user);
  route();
}).catch(() => {
  byId("sign-in").hidden = false;
});
