// The same load as llm_bench.c through the official `openai` npm client, for
// scripts/bench/llm_gateway.sh: keeps CONCURRENCY requests in flight until
// REQUESTS chat completions to BASE_URL have completed (retries off), checks
// every answer, and prints one line in llm_bench's format with this
// process's CPU time and peak RSS.
// Usage: node openai_bench.mjs BASE_URL REQUESTS CONCURRENCY
import OpenAI from "openai";

const [baseURL, totalArg, concArg] = process.argv.slice(2);
const total = Number(totalArg), conc = Number(concArg);
const client = new OpenAI({ baseURL, apiKey: "bench-key", maxRetries: 0, timeout: 60000 });
const messages = [
  { role: "system", content: "You are a benchmark." },
  { role: "user", content: "Say hello." },
];

let started = 0, ok = 0, firstError = "";
async function worker() {
  while (started < total) {
    started++;
    try {
      const r = await client.chat.completions.create({
        model: "bench-model", messages, max_tokens: 16,
      });
      if (r.choices[0].message.content) ok++;
    } catch (e) {
      if (!firstError) firstError = String(e);
    }
  }
}

const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: Math.min(conc, total) }, worker));
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
const rss = process.resourceUsage().maxRSS; // KiB
console.log(`requests=${total} concurrency=${conc} ok=${ok} seconds=${secs.toFixed(3)} ` +
  `rps=${(total / secs).toFixed(0)} cpu_us_per_request=${((cpu.user + cpu.system) / total).toFixed(1)} ` +
  `max_rss_kib=${rss}`);
if (ok !== total) {
  console.error(`openai_bench: ${total - ok} of ${total} requests failed; first error: ${firstError}`);
  process.exit(1);
}
