#!/bin/sh
# The compose stack's one-shot `prepare-sites` job (runs as root in the agent image), for each site named
# as an argument: hand /sites/<site>/state and /sites/<site>/bundles to the services' user (uid 10001), and
# when FEDMEDCLIP_SYNTH=1 and /sites/<site>/data is empty, fill it with that site of a synthetic federation
# (`fedmedclip synth`, deterministic from FEDMEDCLIP_SYNTH_SEED). Safe to run again: nothing is regenerated.
set -eu
[ "$#" -gt 0 ] || { echo "usage: prepare-sites.sh SITE..." >&2; exit 2; }
owner="10001:10001"
need_synth=""
for site in "$@"; do
  mkdir -p "/sites/$site/state" "/sites/$site/bundles" "/sites/$site/data"
  chown "$owner" "/sites/$site/state" "/sites/$site/bundles"
  if [ "${FEDMEDCLIP_SYNTH:-1}" = "1" ] && [ -z "$(ls -A "/sites/$site/data")" ]; then
    need_synth="$need_synth $site"
  fi
done
if [ -n "$need_synth" ]; then
  out="$(mktemp -d)"
  # The synthetic sites are generated together (they differ by design: site shift, label skew) and are
  # named site-1, site-2, …: the k-th site argument receives synthetic site-k.
  fedmedclip synth "$out" --sites "$#" \
    --images-per-site "${FEDMEDCLIP_SYNTH_IMAGES_PER_SITE:-120}" \
    --image-size "${FEDMEDCLIP_SYNTH_IMAGE_SIZE:-224}" \
    --seed "${FEDMEDCLIP_SYNTH_SEED:-0}"
  index=0
  for site in "$@"; do
    index=$((index + 1))
    case " $need_synth " in *" $site "*) ;; *) continue ;; esac
    cp -R "$out/site-$index/." "/sites/$site/data/"
    chmod -R a+rX "/sites/$site/data"
    echo "prepare-sites: $site: $(find "/sites/$site/data" -type f | wc -l) synthetic images"
  done
  rm -rf "$out"
fi
echo "prepare-sites: ready: $*"
