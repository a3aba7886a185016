// OpenID Connect sign-in: the authorization code flow with PKCE, in a popup
// window, so that the verifier and the token stay in this page's memory (no
// storage, no cookies). The popup comes back to /console/ with ?code=...,
// hands code and state to this window with postMessage (same origin only)
// and closes; this window exchanges the code at the issuer's token
// endpoint (allowed by the console's CSP connect-src).

function base64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function random() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** In the popup: hands the issuer's answer to the console that opened it. */
export function finishInPopup() {
  const params = new URLSearchParams(location.search);
  if (!window.opener || !(params.has("code") || params.has("error"))) return false;
  window.opener.postMessage(
    { krakeOidc: true, code: params.get("code"), state: params.get("state"), error: params.get("error") },
    location.origin,
  );
  window.close();
  return true;
}

/** Signs in at `issuer` as client `clientId`; the access token. */
export async function signIn({ issuer, client_id: clientId }) {
  const discovery = await (await fetch(`${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`)).json();
  const verifier = random();
  const state = random();
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const redirectUri = `${location.origin}/console/`;
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: redirectUri,
    scope: "openid profile",
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  const popup = window.open(url.toString(), "krake-sign-in", "popup,width=520,height=680");
  if (!popup) throw new Error("The sign-in window was blocked; allow popups for this site.");
  const answer = await new Promise((resolve, reject) => {
    const listener = (event) => {
      if (event.origin !== location.origin || !event.data || !event.data.krakeOidc) return;
      window.removeEventListener("message", listener);
      clearInterval(closed);
      resolve(event.data);
    };
    const closed = setInterval(() => {
      if (popup.closed) {
        window.removeEventListener("message", listener);
        clearInterval(closed);
        reject(new Error("The sign-in window was closed."));
      }
    }, 500);
    window.addEventListener("message", listener);
  });
  if (answer.error) throw new Error(`The identity provider refused: ${answer.error}`);
  if (answer.state !== state) throw new Error("The sign-in answer does not match this request.");
  const response = await fetch(discovery.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: answer.code,
      redirect_uri: redirectUri,
      client_id: clientId,
      code_verifier: verifier,
    }),
    credentials: "omit",
  });
  const tokens = await response.json();
  if (!response.ok || !tokens.access_token) {
    throw new Error(`The token exchange failed: ${tokens.error_description || tokens.error || response.status}`);
  }
  return tokens.access_token;
}
