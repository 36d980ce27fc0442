#!/bin/sh
# SPDX-License-Identifier: MIT
# install|uninstall DESTDIR_MAN3DIR PAGE...: one ".so" page per function
# named in each page's NAME section, so that "man mp_process_join" works.
set -eu
action=$1
dir=$2
shift 2
for page in "$@"; do
	base=$(basename "$page")
	# The NAME section: the lines between ".SH NAME" and the "\-" line end.
	names=$(sed -n '/^\.SH NAME/,/\\-/p' "$page" | sed '1d; s/\\-.*//' |
		tr ',' '\n' | tr -d ' ' | grep '^mp_' || true)
	for n in $names; do
		[ "$n.3" = "$base" ] && continue
		if [ "$action" = install ]; then
			echo ".so man3/$base" > "$dir/$n.3"
		else
			rm -f "$dir/$n.3"
		fi
	done
done
