# Sourced by the mount's benchmarks: `up_mounted BIN DIR PORT` empties DIR,
# starts `BIN up --dir DIR/data --base-port PORT --mount DIR/mnt` (HOME is
# DIR/home, the log DIR/up.log), waits for the mount, and on exit stops the
# cluster, unmounts, and removes DIR/data and DIR/local.
up_mounted() {
  local bin=$1
  W=$2
  umount -l "$W/mnt" 2>/dev/null
  rm -rf "$W"; mkdir -p "$W/home" "$W/mnt" "$W/local"
  export HOME=$W/home
  "$bin" up --dir "$W/data" --base-port "$3" --mount "$W/mnt" >"$W/up.log" 2>&1 &
  UP=$!
  trap 'kill "$UP" 2>/dev/null; wait "$UP" 2>/dev/null; umount -l "$W/mnt" 2>/dev/null; rm -rf "$W/data" "$W/local"' EXIT
  for _ in $(seq 1 120); do mountpoint -q "$W/mnt" && break; sleep 1; done
  mountpoint -q "$W/mnt" || { echo "the mount did not come up:"; cat "$W/up.log"; exit 1; }
}
