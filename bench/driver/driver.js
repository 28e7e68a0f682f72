'use strict';
// Load driver: `node driver.js '<json config>'` runs one scenario against one
// server (or several nodes of one) and prints one JSON line with its figures.
// Config: {scenario, params, targets:[{host,port}], pids, clk_tck, jwt_secret, org}.
const { Ctx } = require('./harness');
const scenarios = require('./scenarios');
const { selfCpuMicros } = require('./stats');

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const run = scenarios[cfg.scenario];
  if (!run) throw new Error(`unknown scenario ${cfg.scenario}`);
  const ctx = new Ctx(cfg);
  const started = Date.now();
  // A hard stop: a stuck run must not hang the suite.
  const guard = setTimeout(() => {
    process.stderr.write(`driver: scenario ${cfg.scenario} exceeded ${cfg.timeout_s} s\n`);
    process.exit(3);
  }, (cfg.timeout_s || 120) * 1000);
  const figures = await run(ctx, cfg.params);
  ctx.destroyAll();
  clearTimeout(guard);
  const result = {
    scenario: cfg.scenario,
    figures,
    errors: ctx.errors,
    error_samples: ctx.errorSamples,
    unexpected_closes: ctx.unexpectedCloses,
    wall_s: (Date.now() - started) / 1000,
    driver_cpu_s: selfCpuMicros() / 1e6,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`driver: ${err.stack || err}\n`);
  process.exit(2);
});
