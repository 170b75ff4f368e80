#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each; FUZZ_SECONDS=N to
# change). Installs cargo-fuzz when missing. The targets need nightly features; on the
# machine's stable toolchain RUSTC_BOOTSTRAP=1 enables them, as cargo-fuzz's docs allow.
# Crashes land in fuzz/artifacts/<target>/; each fixed one is kept as a regression case in
# fuzz/regressions/<target>/ and replayed by this script before fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

targets=(yaml_loaders template playbook_loader)
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
    echo "fuzz.sh: replaying fuzz/regressions/$t"
    cargo fuzz run -O "$t" "fuzz/regressions/$t"/* -- -runs=0
  fi
  echo "fuzz.sh: $t for ${seconds}s"
  # -rss_limit_mb bounds memory (the loaders must not blow up), -timeout flags a hang.
  cargo fuzz run -O "$t" "fuzz/corpus/$t" fuzz/seeds -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536
done
echo "fuzz.sh: all targets ran ${seconds}s each without a crash"
