#!/usr/bin/env bash
# release-commit.sh COMMIT — cut a signed pullship release from one commit
# of the fleet (config) repository. Used by the post-receive hook beside it
# and by the CI job (ci-release.yml); run it from inside the config
# repository (a bare one is fine).
#
# Environment:
#   PULLSHIP_RELEASE_REPO   release repository (git URL or directory)       required
#   PULLSHIP_KEY            signing key file or KMS URI (space-separated    required
#                           for several keys)
#   PULLSHIP_PASSWORD       key password (or PULLSHIP_PASSWORD_FILE)
#   PULLSHIP_FLEET          path of fleet.toml inside the repository         default fleet.toml
#   PULLSHIP_IMAGE          image source (tarball, OCI layout, docker://…)  default: the fleet's image from the local engine
#   PULLSHIP                the pullship binary                              default pullship
set -euo pipefail
commit="${1:?usage: release-commit.sh COMMIT}"
: "${PULLSHIP_RELEASE_REPO:?set PULLSHIP_RELEASE_REPO}"
: "${PULLSHIP_KEY:?set PULLSHIP_KEY}"
fleet="${PULLSHIP_FLEET:-fleet.toml}"
pullship="${PULLSHIP:-pullship}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The fleet exactly as committed: no work tree, no stray local files.
git archive --format=tar "$commit" | tar -x -C "$work"

args=(release --repo "$PULLSHIP_RELEASE_REPO" --fleet "$work/$fleet" --source-commit "$(git rev-parse "$commit^{commit}")" --quiet)
for k in $PULLSHIP_KEY; do args+=(--key "$k"); done
[ -n "${PULLSHIP_PASSWORD_FILE:-}" ] && args+=(--password-file "$PULLSHIP_PASSWORD_FILE")
[ -n "${PULLSHIP_IMAGE:-}" ] && args+=(--image "$PULLSHIP_IMAGE")

set +e
"$pullship" "${args[@]}"
code=$?
set -e
case $code in
  0) ;;
  4) echo "pullship: commit ${commit:0:12} changes nothing a node applies; no release cut" ;;
  *) echo "pullship: release from ${commit:0:12} FAILED (exit $code); nothing was published" >&2; exit "$code" ;;
esac
