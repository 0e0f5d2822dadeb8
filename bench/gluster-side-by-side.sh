#!/usr/bin/env bash
# Side by side on one machine: the same workload on a real GlusterFS volume,
# replicated at the same time by GlusterFS's own geo-replication (gsyncd)
# into a second volume, and by georep (reading the same brick changelogs)
# into a directory. Prints, for each, the time from the end of the workload
# until the slave matches the master mount (rsync -anciH --delete finds no
# difference), or how far apart they still are when the wait ends.
#
# Run by hand as root, not in CI:
#   cargo build --release --bin geo-rep
#   bash bench/gluster-side-by-side.sh [FILES] [WAIT_SECONDS]
#
# Needs Debian's glusterfs-server (installed when missing), openssh-server
# and rsync. gsyncd reads /var/lib/glusterd whatever glusterd's working
# directory, so this uses the system's default glusterd: it starts one if
# none runs (and stops it at the end), and creates and deletes its own two
# volumes (gbm, gbs). Its sshd listens on 127.0.0.1 only, with its own
# host key and authorized_keys; ~/.ssh is not touched. KEEP=1 keeps the
# work directory (georep's home with its log, both slaves).
set -euo pipefail

FILES=${1:-2000}
WAIT=${2:-300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GEO_REP=${GEO_REP:-${CARGO_TARGET_DIR:-$ROOT/target}/release/geo-rep}
PORT=${PORT:-2299}
HOST=$(hostname)
W=$(mktemp -d /tmp/georep-side-XXXXXX)
started_glusterd=""
[[ $(id -u) -eq 0 ]] || { echo "run as root" >&2; exit 2; }
[[ -x $GEO_REP ]] || { echo "no geo-rep binary at $GEO_REP (cargo build --release)" >&2; exit 2; }
getent hosts "$HOST" >/dev/null || { echo "$HOST does not resolve; map it in /etc/hosts" >&2; exit 2; }
if [[ ! -x /usr/sbin/glusterd ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends glusterfs-server glusterfs-client
fi

cleanup() {
    set +e
    GEOREP_HOME=$W/home "$GEO_REP" --home "$W/home" stop gbm "root@127.0.0.1::$W/georep-slave" force >/dev/null 2>&1
    gluster volume geo-replication gbm "$HOST::gbs" stop force >/dev/null 2>&1
    gluster volume geo-replication gbm "$HOST::gbs" delete >/dev/null 2>&1
    umount "$W/mm" "$W/sm" 2>/dev/null
    for v in gbm gbs; do
        gluster --mode=script volume stop $v force >/dev/null 2>&1
        gluster --mode=script volume delete $v >/dev/null 2>&1
    done
    [[ -f $W/sshd/pid ]] && kill "$(cat "$W/sshd/pid")"
    [[ -n $started_glusterd ]] && kill "$started_glusterd"
    if [[ -n ${KEEP:-} ]]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

if ! pgrep -x glusterd >/dev/null; then
    glusterd -p "$W/glusterd.pid" -l "$W/glusterd.log"
    for _ in $(seq 50); do [[ -s $W/glusterd.pid ]] && break; sleep 0.1; done
    started_glusterd=$(cat "$W/glusterd.pid")
    for _ in $(seq 100); do gluster volume list >/dev/null 2>&1 && break; sleep 0.2; done
fi

mkdir -p "$W"/{m,s,mm,sm,georep-slave,home,sshd}
gluster --mode=script volume create gbm "$HOST:$W/m" force >/dev/null
gluster --mode=script volume create gbs "$HOST:$W/s" force >/dev/null
gluster volume set gbm changelog.changelog on >/dev/null
gluster volume set gbm changelog.rollover-time 1 >/dev/null
gluster volume start gbm >/dev/null
gluster volume start gbs >/dev/null
mount -t glusterfs "$HOST:/gbm" "$W/mm"
mount -t glusterfs "$HOST:/gbs" "$W/sm"

# One sshd for both: gsyncd's key with its forced command, and the
# operator key georep's push-pem uses once.
gluster system:: execute gsec_create >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$W/sshd/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$W/sshd/operator"
cat /var/lib/glusterd/geo-replication/common_secret.pem.pub "$W/sshd/operator.pub" > "$W/sshd/authorized_keys"
chmod 600 "$W/sshd/authorized_keys"
cat > "$W/sshd/config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $W/sshd/hostkey
AuthorizedKeysFile $W/sshd/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
PidFile $W/sshd/pid
EOF
/usr/sbin/sshd -f "$W/sshd/config" -E "$W/sshd/log"

gluster volume geo-replication gbm "$HOST::gbs" create ssh-port "$PORT" no-verify >/dev/null
gluster volume geo-replication gbm "$HOST::gbs" config ssh-port "$PORT" >/dev/null
gluster volume geo-replication gbm "$HOST::gbs" start >/dev/null

slave_url="root@127.0.0.1::$W/georep-slave"
export GEOREP_HOME=$W/home
"$GEO_REP" --home "$W/home" create gbm "$slave_url" push-pem --brick "$W/m" --ssh-port "$PORT" \
    --identity "$W/sshd/operator" --authorized-keys-file "$W/sshd/authorized_keys" \
    --remote-command "$GEO_REP" --known-hosts /dev/null >/dev/null
[[ -n ${KEEP:-} ]] && "$GEO_REP" --home "$W/home" config gbm "$slave_url" log-level debug >/dev/null
"$GEO_REP" --home "$W/home" start gbm "$slave_url" >/dev/null

# Both sessions Active before the workload.
for _ in $(seq 120); do
    g=$(gluster volume geo-replication gbm "$HOST::gbs" status | grep -c Active || true)
    r=$("$GEO_REP" --home "$W/home" status gbm "$slave_url" | grep -c Active || true)
    [[ $g -ge 1 && $r -ge 1 ]] && break
    sleep 1
done
gluster volume geo-replication gbm "$HOST::gbs" status | tail -n +2
"$GEO_REP" --home "$W/home" status gbm "$slave_url"

echo "workload: $FILES files in $((FILES / 100 + 1)) dirs, renames, hard links, symlinks, chmod, chown, truncate, deletes, a 64 MiB file"
m=$W/mm
for d in $(seq 0 $((FILES / 100))); do mkdir -p "$m/d$d"; done
for i in $(seq 1 "$FILES"); do
    head -c $((1024 + i % 3000)) /dev/urandom > "$m/d$((i / 100))/f$i"
done
head -c $((64 << 20)) /dev/urandom > "$m/big"
for i in $(seq 1 10 "$FILES"); do mv "$m/d$((i / 100))/f$i" "$m/d$((i / 100))/renamed$i"; done
for i in $(seq 2 50 "$FILES"); do ln "$m/d$((i / 100))/f$i" "$m/d$((i / 100))/hl$i"; done
for i in $(seq 3 50 "$FILES"); do ln -s "f$i" "$m/d$((i / 100))/sl$i"; done
for i in $(seq 4 20 "$FILES"); do chmod 600 "$m/d$((i / 100))/f$i"; done
for i in $(seq 5 40 "$FILES"); do chown 1234:4321 "$m/d$((i / 100))/f$i"; done
for i in $(seq 6 30 "$FILES"); do truncate -s 100 "$m/d$((i / 100))/f$i"; done
for i in $(seq 7 25 "$FILES"); do rm "$m/d$((i / 100))/f$i"; done
mv "$m/d1" "$m/d1-moved"
mkdir -p "$m/tmp/a/b" && echo x > "$m/tmp/a/b/x" && rm -r "$m/tmp"
echo "ünïcødé" > "$m/ñame é"
sync
t0=$(date +%s.%N)

# rsync's itemized differences between the master mount and a slave.
differences() {
    rsync -anciH --delete --exclude=/.glusterfs --exclude=/.trashcan "$m/" "$1/" | grep -v '^\.d' || true
}
g_done="" r_done=""
while :; do
    now=$(date +%s.%N)
    el=$(echo "$now - $t0" | bc)
    if [[ -z $g_done ]] && [[ -z $(differences "$W/sm") ]]; then g_done=$el; fi
    if [[ -z $r_done ]] && [[ -z $(differences "$W/georep-slave") ]]; then r_done=$el; fi
    [[ -n $g_done && -n $r_done ]] && break
    (($(echo "$el > $WAIT" | bc))) && break
    sleep 0.5
done

report() {
    local name=$1 done=$2 dir=$3
    if [[ -n $done ]]; then
        printf '%-28s slave matches the master mount after %6.1f s\n' "$name" "$done"
    else
        local diffs
        diffs=$(differences "$dir")
        printf '%-28s slave does NOT match after %s s: %d differing entries, e.g.\n' "$name" "$WAIT" "$(wc -l <<<"$diffs")"
        head -5 <<<"$diffs" | sed 's/^/    /'
    fi
}
echo
report "GlusterFS geo-rep (gsyncd)" "$g_done" "$W/sm"
report "georep" "$r_done" "$W/georep-slave"
echo
gluster volume geo-replication gbm "$HOST::gbs" status detail | tail -n +2 | cut -c1-200
"$GEO_REP" --home "$W/home" status gbm "$slave_url" detail
