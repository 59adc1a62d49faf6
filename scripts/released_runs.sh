# Sourced (not run) by the top-level script_pretrain.sh, script_action_recognition.sh and
# script_action_retrieval.sh: the released entry points, kept so that their command lines work.
#
# `released_arguments <default name> "$@"` reads `[name] [dataset protocol] [extra flags...]` into
# $name, $dataset, $protocol and the array `extra`. The name is a folder under ./checkpoints; the
# released run folders imply their dataset and protocol (`released_run`), another name needs both.
# Without a name and without a default, or with a name it cannot place, it prints the calling
# script's header comment and exits 2.

released_run() {  # released_run <name>: sets $dataset and $protocol of a released run folder, else fails
  case $1 in
    ntu60_xsub)  dataset=ntu60  protocol=cross_subject ;;
    ntu60_xview) dataset=ntu60  protocol=cross_view ;;
    ntu120_xsub) dataset=ntu120 protocol=cross_subject ;;
    ntu120_xset) dataset=ntu120 protocol=cross_setup ;;
    *) return 1 ;;
  esac
}

released_usage() {  # released_usage [error words...]: the error, the calling script's header comment, exit 2
  [ $# -gt 0 ] && echo "error: $*" >&2
  sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'
  exit 2
}

released_arguments() {
  name=$1
  shift
  if [ $# -ge 1 ] && [[ $1 != -* ]]; then
    name=$1
    shift
  fi
  [ -n "$name" ] || released_usage "no run name given"
  if [ $# -ge 1 ] && [[ $1 != -* ]]; then
    if [ $# -lt 2 ] || [[ $2 == -* ]]; then
      released_usage "a dataset ($1) needs its protocol too: $name $1 <protocol>"
    fi
    dataset=$1 protocol=$2
    shift 2
  elif ! released_run "$name"; then
    released_usage "$name is not a released run folder (ntu60_xsub, ntu60_xview, ntu120_xsub, ntu120_xset):" \
                   "give its dataset and protocol, e.g. $name ntu60 cross_subject"
  fi
  extra=("$@")
}
