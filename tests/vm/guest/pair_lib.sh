# Sourced by the pair guest scripts (tests/vm/test_vm.sh passes it to the guest as
# /opt/repld/pair_lib.sh): resource r0 of nodes alpha and beta in $cfg, and the helpers to drive
# it. Set `name` before sourcing (the prefix of every line printed).
cfg=/etc/repld/r0.toml
step() { echo "$name: $*"; }
fail() {
  echo "$name: FAIL: $*"
  for n in alpha beta; do echo "--- $n log"; tail -30 /tmp/$n.log 2>/dev/null || true; done
  echo "--- kernel"; dmesg | tail -15
  exit 1
}
ctl() { node=$1; shift; replctl "$@" r0 -c "$cfg" -n "$node"; }
status() { ctl "$1" status --json; }
# wait_for NODE TEXT SECONDS: until the node's JSON status contains TEXT.
wait_for() {
  i=0
  while ! status "$1" 2>/dev/null | grep -q "$2"; do
    i=$((i + 1))
    [ $i -lt $(($3 * 10)) ] || { status "$1" || true; fail "$1: no '$2' after $3 s"; }
    sleep 0.1
  done
}
# start NODE: the node's daemon in the background, its pid in $pid_NODE.
start() { repld -c "$cfg" -n "$1" >>/tmp/$1.log 2>&1 & eval "pid_$1=$!"; }
