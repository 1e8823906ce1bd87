#!/usr/bin/env bash
# Vendored from the team's shared test bed (shared/netns/cluster.sh) so a clean clone has it; keep
# the two in step. tests/test_cluster.sh and bench/ use it with their own HCL_PREFIX and HCL_DIR.
# cluster.sh — a fake multi-host cluster on one Linux box, for testing MPI / ZeroMQ over real TCP.
#
# Each "host" is a network namespace + its own UTS namespace (own hostname) running its own sshd
# on port 2222.  Hosts are wired to a Linux bridge that lives in a separate "switch" namespace,
# so no traffic ever touches the machine's real interfaces.  Addresses: 10.77.0.1, 10.77.0.2, ...
# The filesystem is shared by all hosts (like NFS on a real cluster).
#
#   cluster.sh up                  create namespaces, bridge, keys, sshd (idempotent)
#   cluster.sh run <mpirun args>   run mpirun from host 1 with every param needed for multi-host TCP
#   cluster.sh exec <i> <cmd...>   run a command "on" host i (1-based), e.g. exec 2 python3 srv.py
#   cluster.sh ssh <i> <cmd...>    same but through the host's sshd (checks ssh works)
#   cluster.sh rate <i|all> <rate|off>      egress cap via tbf, e.g. rate all 1gbit
#   cluster.sh netem <i> <netem args...>   e.g. netem 1 delay 1ms rate 1gbit ("netem 1 off" removes);
#                                          needs the sch_netem kernel module (absent on some kernels: use rate)
#   cluster.sh stats               per-host veth byte counters
#   cluster.sh selftest            compile+run a probe: 1 rank/host, distinct netns, bytes crossed the veth
#   cluster.sh status | down
#
# Env: HCL_N (hosts, default 2), HCL_SLOTS (per host, default 2), HCL_DIR (state, default /tmp/hcl-netns),
#      HCL_PREFIX (namespace name prefix, default hcl), HCL_NET (default 10.77.0).
# Needs root, iproute2, util-linux (nsenter/unshare), openssh-server + openssh-client, openmpi-bin.
set -euo pipefail

N=${HCL_N:-2}
SLOTS=${HCL_SLOTS:-2}
DIR=${HCL_DIR:-/tmp/hcl-netns}
P=${HCL_PREFIX:-hcl}
NET=${HCL_NET:-10.77.0}
PORT=2222
SW=${P}sw          # switch namespace holding the bridge

host_ns()  { echo "${P}h$1"; }             # hclh1, hclh2, ...
host_ip()  { echo "$NET.$1"; }
host_name(){ echo "${P}h$1"; }              # hostname == namespace name
sshd_pid() { cat "$DIR/sshd-$1.pid" 2>/dev/null || true; }
alive()    { local p; p=$(sshd_pid "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# enter host i: net ns + uts ns + mount ns of its sshd (which has /etc/hosts bound by ip-netns)
in_host() {
  local i=$1; shift
  local p; p=$(sshd_pid "$i")
  [ -n "$p" ] || { echo "host $i not up" >&2; exit 1; }
  exec nsenter -t "$p" -n -u -m --wd="$PWD" -- env HCL_NS="$(host_ns "$i")" "$@"
}

ensure_pkgs() {
  local miss=()
  [ -x /usr/sbin/sshd ] || miss+=(openssh-server)
  command -v ssh >/dev/null || miss+=(openssh-client)
  command -v mpirun >/dev/null || miss+=(openmpi-bin libopenmpi-dev)
  command -v nsenter >/dev/null || miss+=(util-linux)
  command -v ip >/dev/null || miss+=(iproute2)
  if [ ${#miss[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${miss[@]}" >/dev/null
  fi
}

up() {
  [ "$(id -u)" = 0 ] || { echo "need root" >&2; exit 1; }
  ensure_pkgs
  mkdir -p "$DIR" /run/sshd
  chmod 700 "$DIR"
  # keys: one client key (root), one host key shared by all hosts
  [ -f "$DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C hcl-client -f "$DIR/id_ed25519"
  [ -f "$DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C hcl-host -f "$DIR/host_ed25519"
  cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
  # client config; used via `ssh -F` so ~/.ssh is never touched
  {
    echo "Host *"
    echo "  Port $PORT"
    echo "  User root"
    echo "  IdentityFile $DIR/id_ed25519"
    echo "  IdentitiesOnly yes"
    echo "  StrictHostKeyChecking no"
    echo "  UserKnownHostsFile /dev/null"
    echo "  LogLevel ERROR"
    echo "  BatchMode yes"
    echo "  ConnectTimeout 5"
    echo "  SendEnv OPENBLAS_* OMP_* LANG"
  } > "$DIR/ssh_config"
  # hosts file: ip-netns bind-mounts /etc/netns/<ns>/hosts over /etc/hosts inside the namespace
  : > "$DIR/hosts"
  echo "127.0.0.1 localhost" >> "$DIR/hosts"
  for i in $(seq 1 "$N"); do echo "$(host_ip "$i") $(host_name "$i")" >> "$DIR/hosts"; done
  : > "$DIR/hostfile"
  for i in $(seq 1 "$N"); do echo "$(host_ip "$i") slots=$SLOTS" >> "$DIR/hostfile"; done

  # switch namespace with a bridge (no IP anywhere in the root namespace)
  ip netns list | grep -qw "^$SW" || ip netns add "$SW"
  ip -n "$SW" link show br0 >/dev/null 2>&1 || ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set lo up
  ip -n "$SW" link set br0 up

  for i in $(seq 1 "$N"); do
    local ns; ns=$(host_ns "$i")
    ip netns list | grep -qw "^$ns" || ip netns add "$ns"
    mkdir -p "/etc/netns/$ns"; cp "$DIR/hosts" "/etc/netns/$ns/hosts"
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
      ip link add "${ns}-sw" netns "$SW" type veth peer name eth0 netns "$ns"
      ip -n "$SW" link set "${ns}-sw" master br0 up
    fi
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$(host_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    if ! alive "$i"; then
      cat > "$DIR/sshd-$i.conf" <<EOF
Port $PORT
ListenAddress $(host_ip "$i")
HostKey $DIR/host_ed25519
PidFile $DIR/sshd-$i.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv OMPI_* PMIX_* HCL_* OPENBLAS_* OMP_* LANG
MaxStartups 100:30:200
MaxSessions 100
EOF
      # own UTS ns -> own hostname (so ORTE session dirs /tmp/ompi.<host>.* don't collide)
      ip netns exec "$ns" unshare --uts -- sh -c "hostname $(host_name "$i") && exec /usr/sbin/sshd -f $DIR/sshd-$i.conf -E $DIR/sshd-$i.log"
    fi
  done
  # wait for sshds, then check ssh between hosts
  for i in $(seq 1 "$N"); do
    for _ in $(seq 50); do alive "$i" && break; sleep 0.1; done
    alive "$i" || { echo "sshd on host $i failed; see $DIR/sshd-$i.log" >&2; exit 1; }
  done
  for i in $(seq 1 "$N"); do
    local out
    out=$(in_host 1 ssh -F "$DIR/ssh_config" "$(host_ip "$i")" 'echo $(hostname) $(readlink /proc/self/ns/net)')
    echo "host $i: $(host_ip "$i") -> $out"
  done
}

mpirun_args() {   # $1=1: caller gave its own --host/--hostfile
  local hosts="" i
  for i in $(seq 1 "$N"); do hosts+="${hosts:+,}$(host_ip "$i"):$SLOTS"; done
  [ "${1:-0}" = 1 ] || printf '%s\n' --host "$hosts"
  printf '%s\n' --allow-run-as-root \
    --bind-to none \
    --mca plm_rsh_agent ssh \
    --mca plm_rsh_args "-F $DIR/ssh_config" \
    --mca plm_rsh_no_tree_spawn 1 \
    --mca btl tcp,vader,self \
    --mca btl_tcp_if_include "$NET.0/24" \
    --mca oob_tcp_if_include "$NET.0/24" \
    --mca orte_keep_fqdn_hostnames 1
}

run() {
  local own=0 a
  for a in "$@"; do case "$a" in -H|--host|-host|--hostfile|-hostfile|--machinefile|-machinefile) own=1;; esac; done
  local args=(); mapfile -t args < <(mpirun_args "$own")
  in_host 1 mpirun "${args[@]}" "$@"
}

down() {
  for f in "$DIR"/sshd-*.pid; do
    [ -f "$f" ] || continue
    local p; p=$(cat "$f")
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
    rm -f "$f"
  done
  # kill anything still living in our namespaces (orted, ranks, test servers)
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${P}(h[0-9]+|sw)$" || true); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  rmdir /etc/netns 2>/dev/null || true
  rm -rf "$DIR"
}

status() {
  ip netns list | grep -E "^${P}(h[0-9]+|sw)\b" || echo "no namespaces"
  for i in $(seq 1 "$N"); do
    if alive "$i"; then echo "host $i $(host_ip "$i") sshd pid $(sshd_pid "$i")"; else echo "host $i down"; fi
  done
}

stats() {
  for i in $(seq 1 "$N"); do
    local ns; ns=$(host_ns "$i")
    printf '%s ' "$ns"; ip -n "$ns" -s -j link show eth0 | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print("rx_bytes=%d tx_bytes=%d" % (s["rx"]["bytes"], s["tx"]["bytes"]))'
  done
}

netem() {
  local i=$1; shift
  local ns; ns=$(host_ns "$i")
  if [ "${1:-}" = off ]; then ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
  else ip netns exec "$ns" tc qdisc replace dev eth0 root netem "$@"; fi
  ip netns exec "$ns" tc qdisc show dev eth0
}

# bandwidth cap with tbf (works on kernels without sch_netem)
rate() {
  local sel=$1 r=${2:-}; local hosts
  if [ "$sel" = all ]; then hosts=$(seq 1 "$N"); else hosts=$sel; fi
  for i in $hosts; do
    local ns; ns=$(host_ns "$i")
    if [ -z "$r" ] || [ "$r" = off ]; then ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
    else ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$r" burst 256kb latency 20ms; fi
    echo "$ns: $(ip netns exec "$ns" tc qdisc show dev eth0)"
  done
}

# selftest: compile a tiny MPI program, run 1 rank per host, check distinct netns + bytes over the veths
selftest() {
  cat > "$DIR/probe.c" <<'CEOF'
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int c, char **v) {
  MPI_Init(&c, &v); int r, n; MPI_Comm_rank(MPI_COMM_WORLD, &r); MPI_Comm_size(MPI_COMM_WORLD, &n);
  char h[64] = "", ns[64] = "", *all = malloc(64 * n); gethostname(h, 64);
  ssize_t k = readlink("/proc/self/ns/net", ns, 63); ns[k > 0 ? k : 0] = 0;
  printf("rank %d/%d host=%s netns=%s\n", r, n, h, ns); fflush(stdout);
  MPI_Allgather(ns, 64, MPI_CHAR, all, 64, MPI_CHAR, MPI_COMM_WORLD);
  int d = 0; for (int i = 0; i < n; i++) { int s = 0; for (int j = 0; j < i; j++) s |= !strcmp(all + 64*i, all + 64*j); d += !s; }
  size_t cnt = 8u << 20; char *sb = malloc(cnt), *rb = malloc(cnt * n); memset(sb, r + 1, cnt);
  MPI_Allgather(sb, cnt, MPI_CHAR, rb, cnt, MPI_CHAR, MPI_COMM_WORLD);
  int ok = 1; for (int i = 0; i < n; i++) ok &= rb[(size_t)i * cnt + cnt - 1] == i + 1;
  int sum = 0; MPI_Allreduce(&r, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD); ok &= sum == n * (n - 1) / 2;
  if (!r) printf("distinct_netns=%d allgather+allreduce=%s\n", d, ok ? "OK" : "BAD");
  MPI_Finalize(); return !(ok && d == n);
}
CEOF
  mpicc -O2 -o "$DIR/probe" "$DIR/probe.c"
  local b0 b1 i hosts=""
  for i in $(seq 1 "$N"); do hosts+="${hosts:+,}$(host_ip "$i"):1"; done
  b0=$(txbytes 1)
  ( run -np "$N" --host "$hosts" "$DIR/probe" )
  b1=$(txbytes 1)
  echo "host1 eth0 tx delta: $((b1 - b0)) bytes (expect >= $((8 << 20)))"
  if [ $((b1 - b0)) -ge $((8 << 20)) ]; then echo "selftest PASS"; else echo "selftest FAIL: traffic did not cross the veth"; return 1; fi
}
txbytes() { ip -n "$(host_ns "$1")" -s -j link show eth0 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["bytes"])'; }

cmd=${1:-}; shift || true
case "$cmd" in
  up) up ;;
  run) run "$@" ;;
  args) mpirun_args ;;
  exec) i=$1; shift; in_host "$i" "$@" ;;
  ssh) i=$1; shift; in_host 1 ssh -F "$DIR/ssh_config" "$(host_ip "$i")" "$@" ;;
  netem) netem "$@" ;;
  rate) rate "$@" ;;
  selftest) selftest ;;
  stats) stats ;;
  status) status ;;
  down) down ;;
  *) sed -n '2,/^set -e/p' "$0" | grep '^#'; exit 2 ;;
esac
