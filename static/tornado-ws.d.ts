// Type declarations of tornado-ws.js, the browser SDK (docs/browser.md). Every frame type is the
// server frame of docs/protocol.md, field for field.

/** Any JSON value: what `data` and presence `state` may hold. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

// -- server frames -----------------------------------------------------------------------

export interface Participant {
  user_id: string;
  name?: string;
  /** The user's presence state, when it set one. */
  state?: JsonObject;
}

export interface WelcomeFrame {
  type: "welcome";
  session_id: string;
  user_id: string;
  org_id: string;
  connection_id: string;
  participants: Participant[];
  participants_truncated?: boolean;
  participant_count: number;
  /** The last seq of the session's stream. */
  seq: number;
  epoch: string;
  /** false after a rejoin: the missed messages could not be replayed; reload your state. */
  recovered: boolean;
}

export interface MessageFrame<T = JsonValue> {
  type: "message";
  session_id: string;
  user_id: string;
  name?: string;
  seq: number;
  /** Server time, seconds since the epoch. */
  ts: number;
  id?: string;
  data: T;
}

export interface AckFrame {
  type: "ack";
  session_id: string;
  id: string;
  seq: number;
  duplicate?: boolean;
}

export interface UserJoinedFrame {
  type: "user_joined";
  session_id: string;
  user_id: string;
  name?: string;
  participant_count: number;
}

export interface UserLeftFrame {
  type: "user_left";
  session_id: string;
  user_id: string;
  name?: string;
  participant_count: number;
}

export interface PresenceStateFrame {
  type: "presence_state";
  session_id: string;
  user_id: string;
  state: JsonObject | null;
}

export interface PresenceSummaryFrame {
  type: "presence_summary";
  session_id: string;
  participant_count: number;
  joined: string[];
  left: string[];
}

export interface SignalFrame<T = JsonValue> {
  type: "signal";
  session_id: string;
  user_id: string;
  name?: string;
  key?: string;
  data: T;
}

export interface LeftFrame {
  type: "left";
  session_id: string;
  code: number;
  reason: string;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  session_id?: string;
  id?: string;
}

export interface ConnectedFrame {
  type: "connected";
  user_id: string;
  org_id: string;
  connection_id: string;
  expires_at: number | null;
}

export interface RefreshedFrame {
  type: "refreshed";
  expires_at: number | null;
}

export interface PongFrame {
  type: "pong";
}

/** The frames of one session, by type. */
export interface RoomFrames {
  welcome: WelcomeFrame;
  message: MessageFrame;
  ack: AckFrame;
  user_joined: UserJoinedFrame;
  user_left: UserLeftFrame;
  presence_state: PresenceStateFrame;
  presence_summary: PresenceSummaryFrame;
  signal: SignalFrame;
  left: LeftFrame;
  error: ErrorFrame;
}
export type RoomFrame = RoomFrames[keyof RoomFrames];

// -- states --------------------------------------------------------------------------------

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";
export type RoomState = "joining" | "joined" | "leaving" | "closed";

export interface ConnectionStateEvent {
  state: ConnectionState;
  /** The close code that caused it (1006 for a dead line, 1002 for a protocol error), or null. */
  code: number | null;
  reason: string;
  /** "reconnecting": milliseconds until the next attempt, and its number (1, 2, ...). */
  delay?: number;
  attempt?: number;
}

export interface RoomStateEvent {
  state: RoomState;
  /** The `left` (or connection close) code that caused it, or null. */
  code: number | null;
  reason: string;
}

export interface ConnectionEvents {
  state: ConnectionStateEvent;
  connected: ConnectedFrame;
  refreshed: RefreshedFrame;
  pong: PongFrame;
  /** An error frame about no session (a refused refresh, a frame that did not parse...). */
  error: ErrorFrame;
}

export interface RoomEvents extends RoomFrames {
  state: RoomStateEvent;
  /** Every frame of the session, whatever its type. */
  "*": RoomFrame;
}

// -- options and errors ----------------------------------------------------------------------

export type TokenSource = string | (() => string | Promise<string>);

export interface Options {
  /** A JWT, or a function returning one: asked on every (re)connect and before `exp`. */
  token: TokenSource;
  backoffBase?: number;
  backoffCap?: number;
  maxAttempts?: number;
  stableAfter?: number;
  pingInterval?: number;
  pingTimeout?: number;
  connectTimeout?: number;
  publishTimeout?: number;
  refreshAt?: number;
  /** The jitter source (default Math.random); tests pass a fixed one. */
  random?: () => number;
  /** The WebSocket class (default globalThis.WebSocket), for runtimes without one. */
  WebSocket?: new (url: string) => WebSocket;
}

export declare const DEFAULTS: Readonly<Required<Omit<Options, "token" | "random" | "WebSocket">>>;

export declare class PublishError extends Error {
  /** The server's error code ("rate_limited", "forbidden", ...), or "timeout". */
  readonly code: string;
  readonly id: string;
  readonly session: string;
}

export declare class PresenceError extends Error {
  /** "state_too_large" or "unavailable": the state is the one before. */
  readonly code: string;
  readonly session: string;
}

export declare class ClosedError extends Error {
  readonly code: number | null;
  readonly reason: string;
  /** The session that closed, or null when the whole connection did. */
  readonly session: string | null;
}

// -- the API -------------------------------------------------------------------------------

export interface PublishOptions {
  /** 1-64 characters of [A-Za-z0-9._:-]; a fresh one by default. */
  id?: string;
  /** Milliseconds; 0 or Infinity waits for ever. */
  timeout?: number;
}

export declare class Room {
  private constructor();
  readonly connection: Connection;
  readonly session: string;
  readonly state: RoomState;
  readonly epoch: string | null;
  readonly lastSeq: number | null;
  readonly welcome: WelcomeFrame | null;
  readonly welcomes: number;
  readonly participants: Participant[];
  readonly participantCount: number;
  readonly participantsTruncated: boolean;
  readonly unacked: number;
  /** This connection's presence state as last set and not refused, or null. */
  readonly presence: JsonObject | null;
  readonly closed: { code: number | null; reason: string } | null;
  on<K extends keyof RoomEvents>(type: K, fn: (event: RoomEvents[K]) => void): () => void;
  /** A frame type this SDK does not know yet. */
  on(type: string, fn: (frame: { type: string; session_id: string; [field: string]: unknown }) => void): () => void;
  publish(data: unknown, options?: PublishOptions): Promise<number>;
  /** true if sent; false (dropped) unless joined. Throws TypeError for a key that is not 1-64 characters. */
  signal(data: unknown, options?: { key?: string }): boolean;
  /** Resolves once the server announced the state; rejects with PresenceError or ClosedError. */
  setPresence(state: object): Promise<void>;
  leave(): Promise<void>;
}

export declare class Connection {
  constructor(url: string, options: Options);
  readonly url: string;
  readonly options: Readonly<Required<Omit<Options, "random" | "WebSocket">>> & Pick<Options, "random" | "WebSocket">;
  readonly state: ConnectionState;
  readonly connected: ConnectedFrame | null;
  readonly rooms: ReadonlyMap<string, Room>;
  readonly attempts: number;
  on<K extends keyof ConnectionEvents>(type: K, fn: (event: ConnectionEvents[K]) => void): () => void;
  join(session: string, position?: { since?: number; epoch?: string }): Room;
  close(reason?: string): void;
}

export declare function connect(url: string, options: Options): Connection;
