// The HTTP API, called with this tab's token. Every failure becomes an ApiError
// carrying the server's JSON message ({"error", "message"}).

const TOKEN_KEY = "jobqueue-token";

// sessionStorage: the token lives as long as this tab, never in a cookie or on disk.
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Fired when the API refuses the stored token (revoked, expired): the page signs out.
export const UNAUTHORIZED = "jobqueue:unauthorized";

export async function api(path, { method = "GET", body, headers = {}, with_token } = {}) {
  const bearer = with_token ?? token.get();
  const auth = bearer ? { Authorization: `Bearer ${bearer}` } : {};
  let response;
  try {
    response = await fetch("/api/v1" + path, {
      method, body, headers: { ...headers, ...auth }, cache: "no-store", credentials: "omit",
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
  if (response.status === 401 && with_token === undefined) {
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

// Save a blob under a name: a download from an object URL, so the token never
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
