#!/usr/bin/env bash
# Switches a node between installed releases. deploy.sh runs it on each node
# (as root); it only moves two symlinks under INSTALL_DIR:
#   current   the release the service runs
#   previous  the release `rollback` goes back to
#
# usage: release.sh activate INSTALL_DIR RELEASE_DIR
#          current -> RELEASE_DIR; previous -> the old current. Activating the
#          release that is already current changes nothing (previous is kept,
#          so a rollback still has somewhere to go).
#        release.sh rollback INSTALL_DIR
#          swaps current and previous. Refuses (exit 1) when there is no
#          previous release or it is the current one: a rollback that would
#          change nothing is an error, not a success.
#        release.sh show INSTALL_DIR
set -euo pipefail

die() { echo "release.sh: $*" >&2; exit 1; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

link() { # name -> target of INSTALL_DIR/name, or empty
  if [ -L "$install/$1" ]; then readlink "$install/$1"; fi
}
# Atomic: a new link beside the old one, renamed over it.
point() { # name target
  ln -sfn "$2" "$install/.$1.new"
  mv -Tf "$install/.$1.new" "$install/$1"
}

[ $# -ge 2 ] || usage
cmd=$1
install=$2
[ -d "$install" ] || die "no install directory $install"

case $cmd in
  activate)
    [ $# -eq 3 ] || usage
    target=$3
    [ -d "$target" ] || die "no release at $target"
    cur=$(link current)
    # -ef: the same directory however it is spelled (a trailing slash, a link).
    if [ -n "$cur" ] && [ "$cur" -ef "$target" ]; then
      echo "already on $target (previous: $(link previous || true))"
      exit 0
    fi
    [ -z "$cur" ] || point previous "$cur"
    point current "$target"
    echo "current: $target (previous: ${cur:-none})"
    ;;
  rollback)
    [ $# -eq 2 ] || usage
    cur=$(link current)
    prev=$(link previous)
    [ -n "$prev" ] || die "no previous release under $install: nothing to roll back to"
    [ -d "$prev" ] || die "the previous release $prev is gone"
    ! [ "$prev" -ef "$cur" ] || die "previous and current are both $cur: a rollback would change nothing"
    point current "$prev"
    [ -z "$cur" ] || point previous "$cur"
    echo "current: $prev (previous: ${cur:-none})"
    ;;
  show)
    echo "current: $(link current)"
    echo "previous: $(link previous)"
    ;;
  *) usage ;;
esac
