// Conformance checks that drive the ktrdr gateway simulator with the
// @stoqey/ib client library, exactly as a third-party application would.
//
// Environment:
//   IB_HOST        simulator API host (default 127.0.0.1)
//   IB_PORT        simulator API port (required; every test is skipped without it)
//   IBSIM_CONTROL  base URL of the simulator control API (optional)
//
// Besides each test's own assertions, every client fails its test when the
// library reports a decoding problem (see isProtocolProblem) or when any
// emitted event carries a NaN that came from parsing a malformed field, or
// when its decoder throws.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import {
  BarSizeSetting,
  ErrorCode,
  EventName,
  IBApi,
  SecType,
  WhatToShow,
} from "@stoqey/ib";

const HOST = process.env.IB_HOST || "127.0.0.1";
const PORT = Number.parseInt(process.env.IB_PORT ?? "", 10);
const CONTROL = (process.env.IBSIM_CONTROL ?? "").replace(/\/+$/, "");

const SKIP = Number.isInteger(PORT) && PORT > 0 ? false : "IB_PORT is not set";

/** Per-test budget; node:test aborts t.signal when it runs out. */
const TEST_TIMEOUT_MS = 15_000;
/** Longest wait for a single answer; shorter than the test budget so cleanup still runs. */
const WAIT_MS = 10_000;

const EXPECTED_SERVER_VERSION = 178;
const ACCOUNT = "DU0000001";
const FARM_OK_CODES = [2104, 2106, 2158];

const AAPL = { symbol: "AAPL", secType: SecType.STK, exchange: "SMART", currency: "USD" };
const EURUSD = { symbol: "EUR", secType: SecType.CASH, exchange: "IDEALPRO", currency: "USD" };
const ES_FRONT = { symbol: "ES", secType: SecType.FUT, exchange: "CME", currency: "USD" };

// Each client gets a fresh id: a gateway may still hold the previous
// session of an id for a moment after it disconnects and answer 326.
let nextClientId = 100;
let nextReqId = 1000;

/**
 * Error codes the library itself raises when it cannot make sense of what
 * the server sent (see @stoqey/ib dist/core/io/decoder.js and socket.js):
 *  - 505 UNKNOWN_ID: "No parser implementation found for token" (unknown
 *    message id), "Decoding error on X: unprocessed data left on queue"
 *    (message longer than the decoder expects for the negotiated version),
 *    "Underrun error on X" (message shorter than expected), and an error
 *    message (id 4) whose version field is below 2;
 *  - 506 UNSUPPORTED_VERSION: handshake version outside 100..193;
 *  - 503 UPDATE_TWS: server version too old (handshake or per request);
 *  - 507 BAD_LENGTH, 508 BAD_MESSAGE, 586 FAIL_READ_MESSAGE: framing failures.
 */
const PROBLEM_CODES = new Set([
  ErrorCode.UNKNOWN_ID,
  ErrorCode.UNSUPPORTED_VERSION,
  ErrorCode.UPDATE_TWS,
  ErrorCode.BAD_LENGTH,
  ErrorCode.BAD_MESSAGE,
  ErrorCode.FAIL_READ_MESSAGE,
]);

/**
 * Texts of the same decoder failures, matched as well in case a future
 * release changes the code; the last one is the socket layer's report of a
 * frame longer than 0xFFFFFF (raised with code 502 CONNECT_FAIL).
 */
const PROBLEM_TEXT =
  /underrun|decoding error|unprocessed data|no parser implementation|unsupported version|exceeded max message length/i;

function isProtocolProblem(code, message) {
  return PROBLEM_CODES.has(code) || PROBLEM_TEXT.test(message ?? "");
}

// The decoder rethrows anything that is not an underrun (for instance a
// JSON.parse failure on advancedOrderRejectJson) from the socket's data
// handler, so it surfaces as an uncaught exception. node:test fails the
// running test for it too; recording it here names the cause explicitly.
const uncaught = [];
process.on("uncaughtException", (err) => {
  uncaught.push(err);
});

/** Returns the path of the first NaN found in value, or undefined. */
function findNaN(value, path = "", depth = 0) {
  if (typeof value === "number") return Number.isNaN(value) ? path || "(value)" : undefined;
  if (value === null || typeof value !== "object" || value instanceof Error || depth > 6) {
    return undefined;
  }
  for (const [key, inner] of Object.entries(value)) {
    const found = findNaN(inner, `${path}.${key}`, depth + 1);
    if (found) return found;
  }
  return undefined;
}

function describe(err) {
  return err instanceof Error ? err.message : String(err);
}

/** One @stoqey/ib connection plus everything it reported. */
class Client {
  constructor(t, clientId = nextClientId++) {
    this.t = t;
    this.clientId = clientId;
    this.api = new IBApi({ host: HOST, port: PORT, clientId });
    /** Decoder and parse failures; any entry fails the test. */
    this.problems = [];
    /** error events not declared expected; any entry fails the test. */
    this.unexpected = [];
    this.errors = [];
    this.infos = [];
    this.allowed = [];
    this.started = false;
    this.closed = false;

    this.api.on(EventName.disconnected, () => {
      this.closed = true;
    });

    this.api.on(EventName.error, (err, code, reqId) => {
      const message = describe(err);
      this.errors.push({ code, reqId, message });
      if (isProtocolProblem(code, message)) {
        this.problems.push(`error ${code} (reqId ${reqId}): ${message}`);
      } else if (!this.allowed.some((ok) => ok(code, reqId, message))) {
        this.unexpected.push(`error ${code} (reqId ${reqId}): ${message}`);
      }
    });
    // Error messages with id -1 (farm notices, 326, 1100...) are emitted as
    // info events by this library, never as error events.
    this.api.on(EventName.info, (message, code) => {
      this.infos.push({ code, message });
      if (isProtocolProblem(code, message)) {
        this.problems.push(`info ${code}: ${message}`);
      }
    });
    // The decoder turns unparsable numbers into NaN without complaint.
    this.api.on(EventName.all, (eventName, args) => {
      if (eventName === EventName.received || eventName === EventName.sent) return;
      const where = findNaN(args);
      if (where) {
        this.problems.push(`${eventName} carried NaN at args${where}: ${JSON.stringify(args)}`);
      }
    });
  }

  /** Declares error events matching ok(code, reqId, message) as expected. */
  allowErrors(ok) {
    this.allowed.push(ok);
  }

  /**
   * Resolves with the arguments of the first eventName event for which
   * match returns true. Rejects on timeout, test abort, connection loss
   * (unless waiting for the disconnect itself) or an error event for reqId.
   */
  waitFor(eventName, { match = () => true, reqId, timeoutMs = WAIT_MS, label = eventName } = {}) {
    const { api } = this;
    const signal = this.t.signal;
    return new Promise((resolve, reject) => {
      let timer;
      const cleanup = () => {
        clearTimeout(timer);
        api.off(eventName, onEvent);
        api.off(EventName.error, onError);
        api.off(EventName.disconnected, onDisconnected);
        signal.removeEventListener("abort", onAbort);
      };
      const fail = (message) => {
        cleanup();
        reject(new Error(`${label} (client ${this.clientId}): ${message}`));
      };
      const onEvent = (...args) => {
        let done;
        try {
          done = match(...args);
        } catch (err) {
          cleanup();
          reject(err);
          return;
        }
        if (done) {
          cleanup();
          resolve(args);
        }
      };
      const onError = (err, code, id) => {
        if (reqId !== undefined && id === reqId && eventName !== EventName.error) {
          fail(`error ${code} for reqId ${id}: ${describe(err)}`);
        }
      };
      const onDisconnected = () => fail("connection closed while waiting");
      const onAbort = () => fail("test aborted (timed out)");

      if (signal.aborted) {
        onAbort();
        return;
      }
      timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
      api.on(eventName, onEvent);
      api.on(EventName.error, onError);
      if (eventName !== EventName.disconnected) api.on(EventName.disconnected, onDisconnected);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Resolves once an error or info event with this code arrives. */
  waitForCode(code, { reqId, timeoutMs = WAIT_MS } = {}) {
    const { api } = this;
    const signal = this.t.signal;
    return new Promise((resolve, reject) => {
      let timer;
      const cleanup = () => {
        clearTimeout(timer);
        api.off(EventName.error, onError);
        api.off(EventName.info, onInfo);
        signal.removeEventListener("abort", onAbort);
      };
      const onError = (err, c, id) => {
        if (c === code && (reqId === undefined || id === reqId)) {
          cleanup();
          resolve({ via: EventName.error, code: c, reqId: id, message: describe(err) });
        }
      };
      const onInfo = (message, c) => {
        if (c === code && (reqId === undefined || reqId === -1)) {
          cleanup();
          resolve({ via: EventName.info, code: c, reqId: -1, message });
        }
      };
      const onAbort = () => {
        cleanup();
        reject(new Error(`code ${code} (client ${this.clientId}): test aborted (timed out)`));
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      timer = setTimeout(() => {
        cleanup();
        reject(new Error(`code ${code} (client ${this.clientId}): not reported within ${timeoutMs} ms`));
      }, timeoutMs);
      api.on(EventName.error, onError);
      api.on(EventName.info, onInfo);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Opens the socket; the handshake and startApi follow by themselves. */
  start() {
    this.started = true;
    this.api.connect();
  }

  /**
   * Connects and resolves once the session is usable: the library resumes
   * sending requests on nextValidId, and managedAccounts must have arrived.
   */
  async connect() {
    const server = this.waitFor(EventName.server, { label: "server version" });
    const accounts = this.waitFor(EventName.managedAccounts, { label: "managedAccounts" });
    const validId = this.waitFor(EventName.nextValidId, { label: "nextValidId" });
    this.start();
    const [[version, connectionTime], [accountsList], [orderId]] = await Promise.all([
      server,
      accounts,
      validId,
    ]);
    return { version, connectionTime, accountsList, orderId };
  }

  /** Disconnects if needed and waits briefly for the socket to close. */
  async close() {
    if (this.started && !this.closed) {
      const closed = new Promise((resolve) => {
        const timer = setTimeout(resolve, 2_000);
        this.api.once(EventName.disconnected, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.api.disconnect();
      await closed;
    }
    this.api.removeAllListeners();
  }
}

/**
 * Registers a test with its own timeout. The body gets a factory for
 * clients; all of them are closed afterwards whatever happened, and the
 * test fails if any reported a protocol problem or an unexpected error.
 */
function ibTest(name, body, options = {}) {
  test(name, { timeout: TEST_TIMEOUT_MS, skip: SKIP, ...options }, async (t) => {
    const clients = [];
    const open = (clientId) => {
      const client = new Client(t, clientId);
      clients.push(client);
      return client;
    };
    const uncaughtBefore = uncaught.length;
    let failure;
    try {
      await body(open, t);
    } catch (err) {
      failure = err;
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
    const problems = clients.flatMap((c) => c.problems.map((p) => `client ${c.clientId}: ${p}`));
    for (const err of uncaught.slice(uncaughtBefore)) {
      problems.push(`uncaught exception (decoder parse failure?): ${err?.stack ?? err}`);
    }
    if (problems.length > 0) {
      const also = failure ? `\n(the test also failed: ${describe(failure)})` : "";
      assert.fail(`@stoqey/ib reported protocol problems:\n  ${problems.join("\n  ")}${also}`);
    }
    const unexpected = clients.flatMap((c) => c.unexpected.map((u) => `client ${c.clientId}: ${u}`));
    if (failure && unexpected.length > 0) {
      assert.fail(`${describe(failure)}\nerror events reported meanwhile:\n  ${unexpected.join("\n  ")}`);
    }
    if (failure) throw failure;
    assert.deepEqual(unexpected, [], "unexpected error events");
  });
}

/** Requests contract details and collects them up to contractDetailsEnd. */
async function contractDetails(client, contract) {
  const reqId = nextReqId++;
  const rows = [];
  const onRow = (id, details) => {
    if (id === reqId) rows.push(details);
  };
  client.api.on(EventName.contractDetails, onRow);
  try {
    const end = client.waitFor(EventName.contractDetailsEnd, {
      reqId,
      match: (id) => id === reqId,
      label: `contractDetailsEnd ${contract.symbol}`,
    });
    client.api.reqContractDetails(reqId, contract);
    await end;
  } finally {
    client.api.off(EventName.contractDetails, onRow);
  }
  return rows;
}

/**
 * Requests historical bars. This library version has no separate end
 * event below server version 196: it emits one more historicalData event
 * whose date is "finished-<start>-<end>", which is what ends the wait.
 */
async function historicalBars(client, contract, duration, barSize, whatToShow, useRTH, formatDate) {
  const reqId = nextReqId++;
  const bars = [];
  let endMarker;
  const done = client.waitFor(EventName.historicalData, {
    reqId,
    label: `historicalData ${contract.symbol} ${whatToShow}`,
    match: (id, date, open, high, low, close, volume, barCount, wap) => {
      if (id !== reqId) return false;
      if (typeof date === "string" && date.startsWith("finished")) {
        endMarker = date;
        return true;
      }
      bars.push({ date, open, high, low, close, volume, barCount, wap });
      return false;
    },
  });
  client.api.reqHistoricalData(
    reqId, contract, "", duration, barSize, whatToShow, useRTH, formatDate, false,
  );
  await done;
  return { bars, endMarker };
}

function assertSaneBars(bars, label, { checkVolume }) {
  assert.ok(bars.length > 0, `${label}: no bars`);
  assert.ok(bars.length <= 2000, `${label}: ${bars.length} bars`);
  for (const [i, b] of bars.entries()) {
    const where = `${label} bar ${i} (${b.date})`;
    for (const field of ["open", "high", "low", "close"]) {
      assert.ok(Number.isFinite(b[field]), `${where}: ${field}=${b[field]} is not finite`);
      assert.ok(b[field] > 0, `${where}: ${field}=${b[field]} is not positive`);
    }
    assert.ok(b.low <= Math.min(b.open, b.close), `${where}: low above open/close`);
    assert.ok(b.high >= Math.max(b.open, b.close), `${where}: high below open/close`);
    if (checkVolume) {
      assert.ok(Number.isFinite(b.volume) && b.volume >= 0, `${where}: volume=${b.volume}`);
      assert.ok(Number.isFinite(b.wap), `${where}: wap=${b.wap}`);
      assert.ok(Number.isInteger(b.barCount) && b.barCount >= 0, `${where}: barCount=${b.barCount}`);
    }
  }
}

/** Splits a formatDate=1 intraday date "yyyyMMdd HH:mm:ss[ zone]". */
const INTRADAY_DATE = /^(\d{4})(\d{2})(\d{2})\s+(\d{2}):(\d{2}):(\d{2})(?:\s+(\S+))?$/;

/** An IB trading/liquid hours list, e.g. "20240301:0930-20240301:1600;20240302:CLOSED". */
function assertSessionList(value, label) {
  assert.equal(typeof value, "string", `${label} is not a string`);
  const parts = value.split(";").filter((p) => p !== "");
  assert.ok(parts.length > 0, `${label} is empty`);
  const session = /^\d{8}:(CLOSED|\d{4}-(\d{8}:)?\d{4}(,\d{4}-(\d{8}:)?\d{4})*)$/;
  for (const part of parts) assert.match(part, session, `${label}: bad session "${part}"`);
}

function ymd(date) {
  return date.toISOString().slice(0, 10).replaceAll("-", "");
}

function httpGetJSON(url, signal) {
  return new Promise((resolve, reject) => {
    // agent:false closes the connection afterwards, so no keep-alive socket
    // holds the process open.
    const req = http.get(url, { agent: false, signal, timeout: WAIT_MS }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => {
        if (res.statusCode !== 200) {
          reject(new Error(`GET ${url}: HTTP ${res.statusCode}: ${body}`));
          return;
        }
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(new Error(`GET ${url}: invalid JSON: ${describe(err)}: ${body.slice(0, 200)}`));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: timed out`)));
    req.on("error", reject);
  });
}

/** True when some object inside value has a client id field equal to id. */
function mentionsClientId(value, id, depth = 0) {
  if (value === null || typeof value !== "object" || depth > 6) return false;
  for (const [key, inner] of Object.entries(value)) {
    if (/^client_?id$/i.test(key) && Number(inner) === id) return true;
    if (mentionsClientId(inner, id, depth + 1)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------

ibTest("connect: handshake, server version, accounts, next id, farm notices", async (open) => {
  const c = open();
  const farms = Promise.all(FARM_OK_CODES.map((code) => c.waitForCode(code)));
  const session = await c.connect();

  assert.equal(session.version, EXPECTED_SERVER_VERSION, "server event version");
  assert.equal(c.api.serverVersion, EXPECTED_SERVER_VERSION, "IBApi.serverVersion");
  assert.equal(typeof session.connectionTime, "string");
  assert.match(session.connectionTime, /^\d{8}\s+\d{2}:\d{2}:\d{2}(\s+\S.*)?$/, "connection time");
  assert.ok(c.api.isConnected, "library considers itself connected");

  const accounts = session.accountsList.split(",").filter(Boolean);
  assert.ok(accounts.includes(ACCOUNT), `managedAccounts "${session.accountsList}" lacks ${ACCOUNT}`);
  assert.ok(Number.isInteger(session.orderId) && session.orderId >= 1, `nextValidId ${session.orderId}`);

  // Farm notices carry id -1, so the library reports them as info events.
  const notices = await farms;
  for (const n of notices) assert.equal(n.via, EventName.info, `farm notice ${n.code} arrived as ${n.via}`);
});

ibTest("current time is close to the local clock", async (open) => {
  const c = open();
  await c.connect();
  const answer = c.waitFor(EventName.currentTime, { label: "currentTime" });
  c.api.reqCurrentTime();
  const [time] = await answer;
  assert.ok(Number.isInteger(time), `currentTime ${time} is not an integer`);
  const drift = Math.abs(time - Date.now() / 1000);
  assert.ok(drift <= 5, `currentTime ${time} is ${drift.toFixed(1)} s away from the local clock`);
});

ibTest("contract details: AAPL stock", async (open) => {
  const c = open();
  await c.connect();
  const rows = await contractDetails(c, AAPL);
  assert.equal(rows.length, 1, "exactly one AAPL contract on SMART/USD");
  const [d] = rows;
  assert.equal(d.contract.conId, 265598);
  assert.equal(d.contract.symbol, "AAPL");
  assert.equal(d.contract.secType, SecType.STK);
  assert.equal(d.contract.currency, "USD");
  assert.equal(d.contract.primaryExch, "NASDAQ");
  assert.match(d.longName ?? "", /apple/i, "longName");
  assert.ok(Number.isFinite(d.minTick) && d.minTick > 0 && d.minTick <= 1, `minTick ${d.minTick}`);
  assert.equal(d.timeZoneId, "US/Eastern");
  assertSessionList(d.tradingHours, "tradingHours");
  assertSessionList(d.liquidHours, "liquidHours");
});

ibTest("contract details: EUR.USD forex", async (open) => {
  const c = open();
  await c.connect();
  const rows = await contractDetails(c, EURUSD);
  assert.equal(rows.length, 1, "exactly one EUR.USD contract on IDEALPRO");
  const [d] = rows;
  assert.equal(d.contract.conId, 12087792);
  assert.equal(d.contract.symbol, "EUR");
  assert.equal(d.contract.secType, SecType.CASH);
  assert.equal(d.contract.exchange, "IDEALPRO");
  assert.equal(d.contract.currency, "USD");
  assert.equal(d.contract.localSymbol, "EUR.USD");
  assert.ok((d.longName ?? "").length > 0, "longName is empty");
  assert.ok(Number.isFinite(d.minTick) && d.minTick > 0 && d.minTick < 0.01, `minTick ${d.minTick}`);
  assert.match(d.timeZoneId ?? "", /^\S+$/, "timeZoneId");
  assertSessionList(d.tradingHours, "tradingHours");
});

ibTest("contract details: ES front-month future", async (open) => {
  const c = open();
  await c.connect();
  const rows = await contractDetails(c, ES_FRONT);
  assert.equal(rows.length, 1, "an empty expiry selects exactly the front month");
  const [d] = rows;
  assert.ok(Number.isInteger(d.contract.conId) && d.contract.conId > 0, `conId ${d.contract.conId}`);
  assert.equal(d.contract.symbol, "ES");
  assert.equal(d.contract.secType, SecType.FUT);
  assert.equal(d.contract.exchange, "CME");
  assert.equal(d.contract.currency, "USD");
  assert.equal(d.contract.multiplier, 50);
  assert.match(d.contract.localSymbol ?? "", /^ES/, "localSymbol");
  // A gateway may append the last trade time ("20260619 09:30"); this
  // library only splits that off when it is joined with "-", so a
  // space-separated time stays inside lastTradeDateOrContractMonth.
  const expiry = (d.contract.lastTradeDateOrContractMonth ?? "").split(/\s+/)[0];
  assert.match(expiry, /^\d{6}(\d{2})?$/, "lastTradeDateOrContractMonth");
  // The front month has not expired yet and is at most one quarter away.
  const yesterday = ymd(new Date(Date.now() - 86_400_000));
  const horizon = ymd(new Date(Date.now() + 100 * 86_400_000));
  assert.ok(expiry.padEnd(8, "31") >= yesterday, `expiry ${expiry} is in the past`);
  assert.ok(expiry.padEnd(8, "01") <= horizon, `expiry ${expiry} is not the front month`);
  assert.ok(Number.isFinite(d.minTick) && d.minTick > 0, `minTick ${d.minTick}`);
  assertSessionList(d.tradingHours, "tradingHours");
});

ibTest("historical bars: AAPL 2 D of 1 hour TRADES, formatDate 1", async (open) => {
  const c = open();
  await c.connect();
  const { bars, endMarker } = await historicalBars(
    c, AAPL, "2 D", BarSizeSetting.HOURS_ONE, WhatToShow.TRADES, 1, 1,
  );
  assert.match(endMarker, /^finished/, "end-of-data marker");
  assertSaneBars(bars, "AAPL", { checkVolume: true });
  let previous = "";
  for (const b of bars) {
    const m = INTRADAY_DATE.exec(b.date);
    assert.ok(m, `bar date "${b.date}" is not "yyyyMMdd HH:mm:ss [zone]"`);
    const [, y, mo, d, hh, mm, ss, zone] = m;
    const weekday = new Date(Date.UTC(+y, +mo - 1, +d)).getUTCDay();
    assert.ok(weekday !== 0 && weekday !== 6, `weekend bar ${b.date}`);
    if (zone === "US/Eastern") {
      // useRTH=1: only the regular session 09:30-16:00 New York time.
      const minutes = +hh * 60 + +mm;
      assert.ok(minutes >= 9 * 60 + 30 && minutes < 16 * 60, `bar ${b.date} is outside regular hours`);
    }
    const key = `${y}${mo}${d}${hh}${mm}${ss}`;
    assert.ok(key > previous, `bar ${b.date} is not after the previous one`);
    previous = key;
  }
});

ibTest("historical bars: EUR.USD 1 W of 1 hour MIDPOINT, formatDate 2", async (open) => {
  const c = open();
  await c.connect();
  const { bars, endMarker } = await historicalBars(
    c, EURUSD, "1 W", BarSizeSetting.HOURS_ONE, WhatToShow.MIDPOINT, 0, 2,
  );
  assert.match(endMarker, /^finished/, "end-of-data marker");
  assertSaneBars(bars, "EUR.USD", { checkVolume: false });
  const now = Date.now() / 1000;
  let previous = -Infinity;
  for (const b of bars) {
    assert.match(b.date, /^\d+$/, `bar date "${b.date}" is not epoch seconds`);
    const t = Number(b.date);
    assert.ok(t > previous, `bar ${b.date} is not after the previous one`);
    assert.ok(t <= now + 60, `bar ${b.date} is in the future`);
    assert.ok(t >= now - 10 * 86_400, `bar ${b.date} is older than the requested week`);
    assert.ok(b.open < 10, `EUR.USD open ${b.open} is not a plausible rate`);
    previous = t;
  }
});

ibTest("head timestamp: AAPL TRADES", async (open) => {
  const c = open();
  await c.connect();

  const reqId = nextReqId++;
  const answer = c.waitFor(EventName.headTimestamp, { reqId, match: (id) => id === reqId });
  c.api.reqHeadTimestamp(reqId, AAPL, WhatToShow.TRADES, true, 1);
  const [, stamp] = await answer;
  assert.match(stamp, /^1980\d{4}(?:[- ]+\d{2}:\d{2}:\d{2})?(?:\s+\S+)?$/, `head timestamp "${stamp}"`);

  const reqId2 = nextReqId++;
  const answer2 = c.waitFor(EventName.headTimestamp, { reqId: reqId2, match: (id) => id === reqId2 });
  c.api.reqHeadTimestamp(reqId2, AAPL, WhatToShow.TRADES, true, 2);
  const [, epoch] = await answer2;
  assert.match(epoch, /^\d+$/, `head timestamp "${epoch}" with formatDate 2`);
  const year = new Date(Number(epoch) * 1000).getUTCFullYear();
  assert.equal(year, 1980, `head timestamp ${epoch} is not in 1980`);
});

ibTest("matching symbols: AAP finds AAPL", async (open) => {
  const c = open();
  await c.connect();
  const reqId = nextReqId++;
  const answer = c.waitFor(EventName.symbolSamples, { reqId, match: (id) => id === reqId });
  c.api.reqMatchingSymbols(reqId, "AAP");
  const [, descriptions] = await answer;
  assert.ok(Array.isArray(descriptions) && descriptions.length > 0, "no matches");
  const aapl = descriptions.find((d) => d.contract.symbol === "AAPL" && d.contract.secType === SecType.STK);
  assert.ok(aapl, `AAPL missing from ${JSON.stringify(descriptions.map((d) => d.contract.symbol))}`);
  assert.equal(aapl.contract.conId, 265598);
  assert.equal(aapl.contract.currency, "USD");
  assert.equal(aapl.contract.primaryExch, "NASDAQ");
  assert.ok(Array.isArray(aapl.derivativeSecTypes), "derivativeSecTypes");
});

ibTest("unknown symbol: error 200 for that request", async (open) => {
  const c = open();
  await c.connect();
  const reqId = nextReqId++;
  c.allowErrors((code, id) => code === 200 && id === reqId);
  let details = 0;
  c.api.on(EventName.contractDetails, (id) => {
    if (id === reqId) details++;
  });
  const rejected = c.waitFor(EventName.error, {
    label: "error 200",
    match: (_err, code, id) => id === reqId && code === 200,
  });
  c.api.reqContractDetails(reqId, { symbol: "ZZZZZZ", secType: SecType.STK, exchange: "SMART", currency: "USD" });
  const [err, code, id] = await rejected;
  assert.equal(code, 200);
  assert.equal(id, reqId);
  assert.ok(describe(err).length > 0, "error 200 without text");
  assert.equal(details, 0, "contract details sent for an unknown symbol");
});

ibTest("duplicate client id: second session gets 326 and is dropped", async (open) => {
  const first = open();
  await first.connect();

  const second = open(first.clientId);
  // The gateway closes the socket right after 326; the library may report
  // that as a socket error (502) on the rejected client.
  second.allowErrors((code) => code === ErrorCode.CONNECT_FAIL);
  let gotValidId = false;
  second.api.on(EventName.nextValidId, () => (gotValidId = true));
  const rejected = second.waitForCode(326);
  const dropped = second.waitFor(EventName.disconnected, { label: "disconnect after 326" });
  second.start();
  const [notice] = await Promise.all([rejected, dropped]);
  assert.equal(notice.reqId, -1, "326 is a connection-level message (id -1)");
  assert.equal(gotValidId, false, "rejected session received nextValidId");
  assert.equal(second.api.isConnected, false);

  // The first session is unaffected.
  assert.ok(first.api.isConnected, "first session was dropped");
  const answer = first.waitFor(EventName.currentTime, { label: "currentTime on first session" });
  first.api.reqCurrentTime();
  await answer;
});

ibTest(
  "control API lists the connected client",
  async (open, t) => {
    const c = open();
    await c.connect();
    const state = await httpGetJSON(`${CONTROL}/v1/state`, t.signal);
    assert.ok(
      mentionsClientId(state, c.clientId),
      `GET /v1/state does not list client ${c.clientId}: ${JSON.stringify(state).slice(0, 500)}`,
    );
  },
  { skip: SKIP || (CONTROL ? false : "IBSIM_CONTROL is not set") },
);
