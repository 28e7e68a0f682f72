// A typed page that uses every call of the SDK: `tsc --noEmit -p tests/browser` checks
// static/tornado-ws.d.ts against it (tests/browser/test_typescript.py). It is compiled, not run;
// the same calls run in Chromium in tests/browser/test_sdk.py.
import {
  ClosedError,
  connect,
  Connection,
  DEFAULTS,
  PresenceError,
  PublishError,
  type ConnectionStateEvent,
  type JsonObject,
  type MessageFrame,
  type Participant,
  type Room,
  type RoomStateEvent,
  type WelcomeFrame,
} from "../../static/tornado-ws.js";

interface ChatText {
  text: string;
}

async function fetchToken(): Promise<string> {
  const response = await fetch("/demo/token?user=alice&org=acme");
  const body: { token: string } = await response.json();
  return body.token;
}

const conn: Connection = connect("ws://127.0.0.1:8888", {
  token: fetchToken,
  backoffBase: DEFAULTS.backoffBase,
  backoffCap: 10_000,
  maxAttempts: Infinity,
  pingInterval: 5_000,
  pingTimeout: 5_000,
  connectTimeout: 10_000,
  publishTimeout: 30_000,
  refreshAt: 0.75,
  stableAfter: 5_000,
  random: Math.random,
  WebSocket,
});
const alsoConn = new Connection("/", { token: "eyJ..." });
alsoConn.close("not needed");

const offState = conn.on("state", (event: ConnectionStateEvent) => {
  const why: string = event.code === null ? event.reason : `${event.code} ${event.reason}`;
  if (event.state === "reconnecting") console.log(`attempt ${event.attempt ?? 1} in ${event.delay ?? 0} ms: ${why}`);
  if (event.state === "closed") console.log(`closed for good: ${why}`);
});
conn.on("connected", (frame) => console.log(frame.user_id, frame.org_id, frame.connection_id, frame.expires_at));
conn.on("refreshed", (frame) => console.log("token good until", frame.expires_at));
conn.on("pong", (frame) => console.log(frame.type));
conn.on("error", (frame) => console.log(frame.code, frame.message));
const state: "connecting" | "open" | "reconnecting" | "closed" = conn.state;
console.log(state, conn.url, conn.attempts, conn.connected?.user_id, conn.options.pingInterval);

const room: Room = conn.join("standup");
const resumed: Room = conn.join("alerts", { since: 41, epoch: "2de6" });
for (const [session, each] of conn.rooms) console.log(session, each.state);

room.on("welcome", (welcome: WelcomeFrame) => {
  if (welcome.recovered) console.log("nothing lost up to", welcome.seq);
  else console.log("reload: history did not reach back", welcome.epoch);
  const roster: Participant[] = welcome.participants;
  console.log(roster.length, welcome.participant_count, welcome.participants_truncated === true);
});
room.on("message", (message: MessageFrame) => {
  const data = message.data as unknown as ChatText;
  console.log(message.seq, message.user_id, message.name ?? message.user_id, new Date(message.ts * 1000), data.text);
});
room.on("user_joined", (frame) => console.log(frame.user_id, frame.name, frame.participant_count));
room.on("user_left", (frame) => console.log(frame.user_id, frame.participant_count));
room.on("presence_state", (frame) => console.log(frame.user_id, frame.state?.["typing"] === true));
room.on("presence_summary", (frame) => console.log(frame.participant_count, frame.joined, frame.left));
room.on("signal", (frame) => {
  if (frame.key === "cursor") console.log(frame.user_id, frame.data);
});
room.on("ack", (frame) => console.log(frame.id, frame.seq, frame.duplicate === true));
room.on("left", (frame) => console.log(frame.code, frame.reason));
room.on("error", (frame) => console.log(frame.code, frame.message, frame.id));
room.on("state", (event: RoomStateEvent) => console.log(event.state, event.code, event.reason));
room.on("*", (frame) => console.log(frame.type, frame.session_id));
const offCustom = room.on("something_new", (frame) => console.log(frame.type, frame.session_id, frame["field"]));
offCustom();

async function chat(): Promise<void> {
  try {
    const seq: number = await room.publish({ text: "hi" } satisfies ChatText);
    const again: number = await room.publish(null, { id: "my-id.1", timeout: 5_000 });
    console.log(seq, again, room.unacked);
  } catch (err) {
    if (err instanceof PublishError) console.log(err.code, err.id, err.session);
    else if (err instanceof ClosedError) console.log(err.code, err.reason, err.session);
    else throw err;
  }
  const sent: boolean = room.signal({ x: 0.5, y: 0.25 }, { key: "cursor" });
  room.signal("wave");
  const typing: JsonObject = { typing: true };
  try {
    await room.setPresence(typing); // resolves once the server announced it
  } catch (err) {
    if (err instanceof PresenceError) console.log(err.code, err.session);
  }
  void room.setPresence({ typing: false }); // or fire and forget: a refusal is no unhandled rejection
  const mine: JsonObject | null = room.presence;
  console.log(mine?.["typing"]);
  const people: Participant[] = room.participants;
  console.log(sent, people.map((p) => p.state?.["typing"]), room.participantCount, room.participantsTruncated);
  console.log(room.session, room.state, room.epoch, room.lastSeq, room.welcome?.seq, room.welcomes, room.closed?.code);
  await resumed.leave();
  await room.leave();
  offState();
  conn.close();
}
void chat();
