// Historical-data throughput of @stoqey/ib against a TWS API gateway (the
// ktrdr simulator), the peer figure for client/bench_test.go's
// BenchmarkHistoricalThroughputStoqey. Not a test file: `node --test` does
// not pick it up.
//
// It connects once, makes one untimed warm-up request, then makes the same
// request N times one after another, keeping every bar as a caller would,
// and prints one JSON line:
//
//   {"bars": <bars over the N timed requests>, "seconds": <their wall time>,
//    "bars_per_s": <bars / seconds>}
//
// The clock runs from the first timed request to the end marker of the
// last; process start, connect and warm-up are excluded.
//
// The request is EUR.USD CASH IDEALPRO MIDPOINT, 1 D of 1 min bars ending
// 20250312-21:00:00 UTC, formatDate 2, regular and extended hours: the
// same as benchHistory in client/bench_test.go. Keep the two in step.
//
// Environment:
//   IB_HOST     gateway host (default 127.0.0.1)
//   IB_PORT     gateway port (required)
//   N           timed requests (default 10)
//   CLIENT_ID   API client id (default 901)
//   TIMEOUT_MS  bound on the whole run (default 120000)
//
// Exit status 1, with the reason on stderr, on any error or timeout.

import { EventName, IBApi, SecType } from "@stoqey/ib";

const HOST = process.env.IB_HOST || "127.0.0.1";
const PORT = Number.parseInt(process.env.IB_PORT ?? "", 10);
const N = Number.parseInt(process.env.N ?? "10", 10);
const CLIENT_ID = Number.parseInt(process.env.CLIENT_ID ?? "901", 10);
const TIMEOUT_MS = Number.parseInt(process.env.TIMEOUT_MS ?? "120000", 10);

const CONTRACT = { symbol: "EUR", secType: SecType.CASH, exchange: "IDEALPRO", currency: "USD" };
const END = "20250312-21:00:00";
const DURATION = "1 D";
const BAR_SIZE = "1 min";
const WHAT_TO_SHOW = "MIDPOINT";
const USE_RTH = 0;
const FORMAT_DATE = 2;

/**
 * The library paces its own requests at 40 per second by default; at a
 * few milliseconds per request that, not the data path, would set the
 * figure. The Go side lifts its own 45 messages/s pacing the same way.
 */
const MAX_REQ_PER_SEC = 100_000;

function fail(message) {
  process.stderr.write(`bench-historical: ${message}\n`);
  process.exit(1);
}

if (!Number.isInteger(PORT) || PORT <= 0) fail("IB_PORT is not set");
if (!Number.isInteger(N) || N <= 0) fail(`N=${process.env.N} is not a positive integer`);

const api = new IBApi({ host: HOST, port: PORT, maxReqPerSec: MAX_REQ_PER_SEC });
const deadline = setTimeout(() => fail(`no result within ${TIMEOUT_MS} ms`), TIMEOUT_MS);

/** The request in flight: its id, its bars so far and how to finish it. */
let pending;

api.on(EventName.error, (err, code, reqId) => {
  const text = err instanceof Error ? err.message : String(err);
  if (pending && reqId === pending.reqId) {
    pending.reject(new Error(`error ${code} for request ${reqId}: ${text}`));
  } else if (reqId !== undefined && reqId !== -1) {
    fail(`error ${code} (reqId ${reqId}): ${text}`);
  }
});
api.on(EventName.disconnected, () => {
  if (pending) pending.reject(new Error("connection closed"));
});
// Below server version 196 the library ends a request with one more
// historicalData event whose date is "finished-<start>-<end>".
api.on(EventName.historicalData, (reqId, time, open, high, low, close, volume, count, wap) => {
  if (!pending || reqId !== pending.reqId) return;
  if (typeof time === "string" && time.startsWith("finished")) {
    pending.resolve(pending.bars);
    return;
  }
  pending.bars.push({ time, open, high, low, close, volume, count, wap });
});

function connect() {
  return new Promise((resolve, reject) => {
    api.once(EventName.nextValidId, resolve);
    api.once(EventName.disconnected, () => reject(new Error("connection closed during connect")));
    api.connect(CLIENT_ID);
  });
}

let nextReqId = 1;

function history() {
  return new Promise((resolve, reject) => {
    pending = { reqId: nextReqId++, bars: [], resolve, reject };
    api.reqHistoricalData(
      pending.reqId, CONTRACT, END, DURATION, BAR_SIZE, WHAT_TO_SHOW, USE_RTH, FORMAT_DATE, false,
    );
  }).finally(() => {
    pending = undefined;
  });
}

try {
  await connect();
  const warm = await history();
  if (warm.length === 0) fail("the warm-up request returned no bars");
  let bars = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    bars += (await history()).length;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  clearTimeout(deadline);
  api.removeAllListeners(EventName.disconnected);
  api.disconnect();
  console.log(JSON.stringify({ bars, seconds, bars_per_s: bars / seconds }));
} catch (err) {
  fail(err instanceof Error ? err.message : String(err));
}
