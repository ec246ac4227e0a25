// Passkeys in the admin pages: the one script they need (WebAuthn has no form-only way).
// A page that uses it holds the server's options as JSON in the data-options attribute of
// the element with id "passkey-status" (where the outcome is said), a form with id
// "passkey-form" and a hidden field "answer", and a button with id "passkey-start". The options' binary fields
// come as base64url (mailstack.identity.passkeys); the answer goes back the same way.
"use strict";

(function () {
  function toBytes(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }

  function toText(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withBytes(options) {
    const key = options.publicKey;
    key.challenge = toBytes(key.challenge);
    if (key.user) key.user.id = toBytes(key.user.id);
    for (const list of [key.excludeCredentials, key.allowCredentials]) {
      (list || []).forEach((item) => { item.id = toBytes(item.id); });
    }
    return options;
  }

  function answerOf(credential) {
    const r = credential.response;
    const answer = { id: toText(credential.rawId), clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) answer.attestationObject = toText(r.attestationObject);
    if (r.authenticatorData) {
      answer.authenticatorData = toText(r.authenticatorData);
      answer.signature = toText(r.signature);
    }
    return answer;
  }

  function start() {
    const form = document.getElementById("passkey-form");
    const status = document.getElementById("passkey-status");
    const options = withBytes(JSON.parse(status.dataset.options));
    const call = options.publicKey.user ? navigator.credentials.create(options)
                                        : navigator.credentials.get(options);
    call.then((credential) => {
      form.elements.answer.value = JSON.stringify(answerOf(credential));
      form.submit();
    }).catch((error) => {
      if (status) status.textContent = "The passkey did not answer: " + error.message;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("passkey-start");
    if (!button) return;
    if (!window.PublicKeyCredential) {
      button.disabled = true;
      const status = document.getElementById("passkey-status");
      if (status) status.textContent = "This browser cannot use passkeys here.";
      return;
    }
    button.addEventListener("click", start);
  });
})();
