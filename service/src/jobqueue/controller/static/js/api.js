// The HTTP API, called with the browser's sign-in: the token sits in an HttpOnly
// cookie this script cannot read (POST /session set it); every change also sends the
// CSRF cookie's value back as a header. Every failure becomes an ApiError carrying
// the server's JSON message ({"error", "message"}).

const CSRF_COOKIE = "jobqueue_csrf";
const SAFE_METHODS = new Set(["GET", "HEAD"]);

function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith(`${CSRF_COOKIE}=`));
  return found ? decodeURIComponent(found.slice(CSRF_COOKIE.length + 1)) : "";
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Fired when the API refuses the sign-in (its token revoked, expired): the page signs
// out. Not for a call made `quiet` (the first look, before anyone signed in).
export const UNAUTHORIZED = "jobqueue:unauthorized";

export async function api(path,
  { method = "GET", body, headers = {}, with_token, quiet = false } = {}) {
  const auth = with_token ? { Authorization: `Bearer ${with_token}` } : {};
  const csrf = SAFE_METHODS.has(method) ? {} : { "X-CSRF-Token": csrfToken() };
  let response;
  try {
    response = await fetch("/api/v1" + path, {
      method, body, headers: { ...headers, ...csrf, ...auth }, cache: "no-store",
      credentials: "same-origin",
    });
  } catch (exc) {
    throw new ApiError(0, "network", `the controller could not be reached (${exc.message})`);
  }
  if (response.ok) return response;
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const answer = await response.json();
    code = answer.error ?? code;
    message = answer.message ?? message;
  } catch {
    // not JSON (a proxy's error page): keep the status line
  }
  if (response.status === 401 && with_token === undefined && !quiet) {
    window.dispatchEvent(new CustomEvent(UNAUTHORIZED, { detail: message }));
  }
  throw new ApiError(response.status, code, message);
}

export async function apiJson(path, options) {
  return (await api(path, options)).json();
}

// A job id or file path as URL path segments (a file name may hold anything).
export function segments(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

export function jobPath(id) {
  return `/jobs/${encodeURIComponent(id)}`;
}

// Save a blob under a name: a download from an object URL, so nothing of the sign-in
// appears in a link.
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export async function download(path, filename) {
  saveBlob(await (await api(path)).blob(), filename);
}
