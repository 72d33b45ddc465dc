"use strict";
// Drives the demo plugin's three WebSocket streaming modes.

const base = new URL(".", window.location.href);

function socketUrl(path) {
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

function byId(id) {
  return document.getElementById(id);
}

function show(name, data) {
  const item = document.createElement("li");
  if (data.success === false) item.className = "error";
  const seq = data.sequence_number === undefined ? "" : `#${data.sequence_number} `;
  item.textContent = seq + data.response;
  byId(`${name}-log`).appendChild(item);
}

function status(name, text) {
  byId(`${name}-status`).textContent = text;
}

// One stream: opens the socket, shows every reply and how it closed.
function openStream(name, path, onOpen) {
  const ws = new WebSocket(socketUrl(path));
  const streamId = `${name}-${Date.now().toString(36)}`;
  let sequence = 0;
  const send = (fields) => {
    sequence += 1;
    ws.send(JSON.stringify({
      stream_id: streamId,
      sequence_number: sequence,
      timestamp: Date.now(),
      ...fields,
    }));
  };
  status(name, "connecting");
  ws.onopen = () => {
    status(name, "open");
    onOpen(send);
  };
  ws.onmessage = (event) => show(name, JSON.parse(event.data));
  ws.onclose = (event) => {
    status(name, `closed ${event.code}${event.reason ? ": " + event.reason : ""}`);
  };
  ws.onerror = () => status(name, "error");
  return { ws, send };
}

let bidi = null;

byId("bidi-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const message = byId("bidi-message").value;
  if (bidi && bidi.ws.readyState === WebSocket.OPEN) {
    bidi.send({ message });
  } else {
    byId("bidi-log").replaceChildren();
    bidi = openStream("bidi", "ws/stream/bidirectional", (send) => send({ message }));
  }
});

byId("bidi-close").addEventListener("click", () => {
  if (bidi) bidi.ws.close(1000, "done");
});

byId("server-form").addEventListener("submit", (event) => {
  event.preventDefault();
  byId("server-log").replaceChildren();
  const interval = encodeURIComponent(byId("server-interval").value);
  const message = byId("server-message").value;
  openStream("server", `ws/stream/server?interval=${interval}`, (send) => send({ message }));
});

byId("client-form").addEventListener("submit", (event) => {
  event.preventDefault();
  byId("client-log").replaceChildren();
  const count = Number(byId("client-count").value);
  const message = byId("client-message").value;
  openStream("client", "ws/stream/client", (send) => {
    for (let i = 1; i <= count; i += 1) send({ message: `${message} ${i}` });
    send({ message: "end", end: true });
  });
});

// The token stream: an EventSource on the gateway's SSE endpoint; "Generate"
// asks the plugin to publish the words of the text as events.
const tokens = new EventSource(new URL("/events/demo.tokens", window.location.href));
tokens.onopen = () => status("tokens", "open");
tokens.onerror = () => status("tokens", "reconnecting");
tokens.addEventListener("token", (event) => {
  const out = byId("tokens-out");
  out.textContent += (out.textContent ? " " : "") + JSON.parse(event.data).data;
});
tokens.addEventListener("done", (event) => {
  status("tokens", `open, ${JSON.parse(event.data).data} tokens received`);
});

byId("tokens-form").addEventListener("submit", (event) => {
  event.preventDefault();
  byId("tokens-out").textContent = "";
  status("tokens", "generating");
  const text = encodeURIComponent(byId("tokens-text").value);
  fetch(new URL(`generate?text=${text}&interval=0.1`, base), { method: "POST" });
});
