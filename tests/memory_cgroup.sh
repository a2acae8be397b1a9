# memory_cgroup.sh: sourced by the tests that run pmoe under a memory limit.
#
# memory_cgroup BYTES creates a child memory cgroup of this process's own
# (cgroup v2, or v1's memory controller) limited to BYTES, sets CGROUP to its
# folder and IN_CGROUP to a command prefix that runs a command inside it
# ("${IN_CGROUP[@]}" COMMAND ARGS...). It returns 1 where that is not
# allowed (not root, a read-only cgroup file system), for the caller to say
# "skipped". memory_cgroup_remove removes it once what ran in it has ended
# (a process just killed in it may keep it busy for a moment) and clears
# CGROUP; callers also call it on exit.
memory_cgroup() {
  local v2 v1 limit_file=""
  v2=$(sed -n 's/^0:://p' /proc/self/cgroup)
  for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    if [ -n "$v2" ] && [ -f "$root$v2/memory.max" -o -f "$root/cgroup.controllers" ] &&
       grep -qw memory "$root${v2%/}/cgroup.subtree_control" 2>/dev/null &&
       mkdir "$root${v2%/}/pmoe-test-$$" 2>/dev/null; then
      CGROUP="$root${v2%/}/pmoe-test-$$" limit_file=memory.max
      break
    fi
  done
  v1=$(sed -n 's/^[0-9]*:[^:]*\bmemory\b[^:]*://p' /proc/self/cgroup)
  for dir in "/sys/fs/cgroup/memory$v1" /sys/fs/cgroup/memory; do
    [ -z "$limit_file" ] || break
    if [ -n "$v1" ] && [ -f "$dir/memory.limit_in_bytes" ] && mkdir "$dir/pmoe-test-$$" 2>/dev/null; then
      CGROUP="$dir/pmoe-test-$$" limit_file=memory.limit_in_bytes
    fi
  done
  [ -n "$limit_file" ] || return 1
  IN_CGROUP=(sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$CGROUP")
  echo "$1" >"$CGROUP/$limit_file"
}

memory_cgroup_remove() {
  [ -n "${CGROUP:-}" ] || return 0
  for _ in $(seq 50); do
    rmdir "$CGROUP" 2>/dev/null && { CGROUP=""; return 0; }
    sleep 0.1
  done
  echo "could not remove the memory cgroup $CGROUP" >&2
}
