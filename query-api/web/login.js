// Sign-in, and setting a password with a one-time invitation or reset
// token (/login?token=…). Plain DOM: this page loads no library.
const form = document.getElementById("login");
const message = document.getElementById("message");
const submit = document.getElementById("submit");
const params = new URLSearchParams(location.search);
const token = params.get("token") || params.get("invitation");

// Only same-site app paths: never an open redirect.
function next() {
  const n = params.get("next") || "";
  return n.startsWith("/app/") && !n.startsWith("//") ? n : "/app/";
}

function say(text) {
  message.textContent = text;
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let json = null;
  try {
    json = await r.json();
  } catch (_) {
    json = null;
  }
  return { ok: r.ok, status: r.status, json };
}

function problem(res, what) {
  if (res.status === 429) {
    return (res.json && res.json.detail) || "Too many attempts: wait a minute and try again.";
  }
  if (res.json && res.json.detail) return res.json.detail;
  return `${what} failed (HTTP ${res.status}). Check that the server is running and try again.`;
}

async function signIn(email, password) {
  const res = await post("/api/v1/auth/login", { email, password });
  if (res.ok) {
    location.assign(next());
    return;
  }
  say(res.status === 401 ? "That e-mail and password do not match. Check both and try again." : problem(res, "Signing in"));
}

async function accept(password) {
  const res = await post("/api/v1/auth/accept", { token, password });
  if (!res.ok) {
    say(problem(res, "Setting the password"));
    return;
  }
  await signIn(res.json.user.email, password);
}

if (token) {
  document.getElementById("heading").textContent = "Choose your password";
  document.title = "Choose your password — CROW";
  document.getElementById("email-field").hidden = true;
  document.getElementById("confirm-field").hidden = false;
  document.getElementById("password").autocomplete = "new-password";
  document.getElementById("hint").textContent = "At least 10 characters. The link works once.";
  submit.textContent = "Set password and sign in";
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  say("");
  const password = form.password.value;
  submit.disabled = true;
  try {
    if (token) {
      if (password !== form.confirm.value) {
        say("The two passwords differ: type the same one twice.");
        return;
      }
      await accept(password);
    } else {
      const email = form.email.value.trim();
      if (!email || !password) {
        say("Enter your e-mail and your password.");
        return;
      }
      await signIn(email, password);
    }
  } catch (e) {
    say("The server could not be reached. Check your connection and try again.");
  } finally {
    submit.disabled = false;
  }
});
