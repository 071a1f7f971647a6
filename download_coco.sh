#!/usr/bin/env bash
# Download and extract COCO 2017 (images + annotations) so that it can be trusted:
# resumable downloads, size and zip-integrity checks, atomic and idempotent
# extraction.  Run `./download_coco.sh --help` for usage.
set -euo pipefail

PROG=${0##*/}
DEFAULT_BASE_URL=http://images.cocodataset.org
ANN_NAME=annotations_trainval2017

root=.
splits=train2017,val2017
annotations_only=0
keep_zips=0
base_url=$DEFAULT_BASE_URL
retry_delay=${DOWNLOAD_COCO_RETRY_DELAY:-5}
max_attempts=3

usage() {
    cat <<EOF
Usage: $PROG [options]

Download COCO 2017 and extract it under a root folder:

  ROOT/images/SPLIT/         the images of each requested split (e.g. images/train2017/)
  ROOT/annotations/*.json    the contents of annotations_trainval2017.zip
                             (instances, person_keypoints and captions, train + val)

Each archive is fetched with curl into ROOT/downloads/NAME.zip (written as
NAME.zip.part while incomplete, so an interrupted download resumes where it
stopped instead of starting over).  Before it is used, its size is compared with
the server's Content-Length and the zip is integrity-tested; a corrupt archive
is moved aside (NAME.zip.corrupt) and the run fails, so the next run downloads
it again.  Extraction goes through a temporary folder and is moved into place in
one step; a hidden marker (e.g. images/.train2017.complete) is written last.
Whatever is already complete is skipped without any network access, so it is
always safe to re-run.

Options:
  --root DIR          folder to download into (default: .)
  --splits LIST       comma-separated image splits to fetch, any of
                      train2017, val2017, test2017 (default: train2017,val2017).
                      annotations_trainval2017.zip is always fetched as well
                      (it has no test2017 annotations).
  --annotations-only  fetch only annotations_trainval2017.zip, no images
                      (--splits is ignored)
  --base-url URL      server to download from (default: $DEFAULT_BASE_URL).
                      Image zips are fetched from URL/zips/SPLIT.zip and the
                      annotations from URL/annotations/$ANN_NAME.zip,
                      so a mirror or a local server can be used.
  --keep-zips         keep the zip files in ROOT/downloads after extraction
                      (default: delete each zip once it has been extracted;
                      the full set is about 19 GB)
  -h, --help          show this help and exit

Approximate sizes: train2017 18 GB (118k images), val2017 0.8 GB (5k images),
test2017 6 GB (41k images), annotations 0.25 GB.  Extraction needs about as
much free space again while the zip is still present.

Requires curl, and unzip (or, more slowly, python3).

Environment:
  DOWNLOAD_COCO_RETRY_DELAY   seconds to wait before resuming a transfer that
                              broke off, up to $max_attempts attempts per archive (default: 5)

Exit status: 0 on success (or nothing to do), 1 on a failed download, corrupt
archive or missing tool, 2 on a usage error.
EOF
}

usage_error() {
    printf '%s: error: %s (see --help)\n' "$PROG" "$1" >&2
    exit 2
}
say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- arguments
need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        usage_error "option $1 needs a value"
    fi
    case $2 in
        -*) usage_error "option $1 needs a value, got '$2'" ;;
    esac
}

while [ $# -gt 0 ]; do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --root)
            need_value "$@"
            root=$2
            shift 2
            ;;
        --root=*)
            root=${1#*=}
            [ -n "$root" ] || usage_error "option --root needs a value"
            shift
            ;;
        --splits)
            need_value "$@"
            splits=$2
            shift 2
            ;;
        --splits=*)
            splits=${1#*=}
            shift
            ;;
        --base-url)
            need_value "$@"
            base_url=$2
            shift 2
            ;;
        --base-url=*)
            base_url=${1#*=}
            shift
            ;;
        --annotations-only)
            annotations_only=1
            shift
            ;;
        --keep-zips)
            keep_zips=1
            shift
            ;;
        -*) usage_error "unknown option '$1'" ;;
        *) usage_error "unexpected argument '$1'" ;;
    esac
done

# Validate --splits: comma-separated subset of the known splits, de-duplicated.
[ -n "$splits" ] || usage_error "--splits needs at least one split (train2017, val2017, test2017)"
split_list=
old_ifs=$IFS
IFS=,
set -f
# shellcheck disable=SC2086  # split on commas on purpose
set -- $splits
set +f
IFS=$old_ifs
for s in "$@"; do
    case $s in
        train2017 | val2017 | test2017) ;;
        '') usage_error "empty split name in --splits '$splits'" ;;
        *) usage_error "unknown split '$s' in --splits; choose from train2017, val2017, test2017" ;;
    esac
    case " $split_list " in
        *" $s "*) ;;
        *) split_list="$split_list $s" ;;
    esac
done

case $base_url in
    *://?*) ;;
    *) usage_error "--base-url must be a URL such as $DEFAULT_BASE_URL, got '$base_url'" ;;
esac
while :; do
    case $base_url in
        */) base_url=${base_url%/} ;;
        *) break ;;
    esac
done

case $retry_delay in
    '' | *[!0-9]*) usage_error "DOWNLOAD_COCO_RETRY_DELAY must be a whole number of seconds, got '$retry_delay'" ;;
esac

if [ "$annotations_only" = 1 ]; then
    names=$ANN_NAME
else
    names="${split_list# } $ANN_NAME"
fi

images_dir=$root/images
ann_dir=$root/annotations
dl_dir=$root/downloads

# ---------------------------------------------------------------- helpers
archive_url() {
    if [ "$1" = "$ANN_NAME" ]; then
        printf '%s/annotations/%s.zip\n' "$base_url" "$1"
    else
        printf '%s/zips/%s.zip\n' "$base_url" "$1"
    fi
}

dest_dir() {
    if [ "$1" = "$ANN_NAME" ]; then
        printf '%s\n' "$ann_dir"
    else
        printf '%s\n' "$images_dir"
    fi
}

# What an archive extracts to, for messages.
target_desc() {
    if [ "$1" = "$ANN_NAME" ]; then
        printf '%s/\n' "$ann_dir"
    else
        printf '%s/%s/\n' "$images_dir" "$1"
    fi
}

# An archive is present when its marker exists and what it lists is still there.
is_present() {
    local name=$1 dest marker line
    dest=$(dest_dir "$name")
    marker=$dest/.$name.complete
    [ -f "$marker" ] || return 1
    if [ "$name" = "$ANN_NAME" ]; then
        while IFS= read -r line; do
            case $line in
                file=*) [ -e "$dest/${line#file=}" ] || return 1 ;;
            esac
        done <"$marker"
        return 0
    fi
    [ -d "$dest/$name" ]
}

file_size() {
    if [ -f "$1" ]; then
        local n
        n=$(wc -c <"$1")
        printf '%s\n' $((n + 0))
    else
        printf '0\n'
    fi
}

# Print the server's Content-Length for URL (after redirects), or nothing if
# the server gives none or cannot be asked.
remote_size() {
    local headers n
    if ! headers=$(curl --silent --show-error --fail --location --head \
        --connect-timeout 30 --max-time 120 "$1" 2>&1); then
        warn "could not ask the server for the size of $1 (${headers:-no answer}); skipping the size check"
        return 0
    fi
    n=$(printf '%s\n' "$headers" | tr -d '\r' | awk '
        /^HTTP\// { n = "" }
        tolower($1) == "content-length:" { n = $2 }
        END { print n }')
    case $n in
        '' | *[!0-9]*) ;;
        *) printf '%s\n' "$n" ;;
    esac
}

# Download URL into PART, resuming from whatever PART already holds.
download() {
    local name=$1 url=$2 part=$3 size=$4 have attempt=1 rc code progress
    if [ -t 2 ]; then progress=--progress-bar; else progress=--silent; fi
    while :; do
        have=$(file_size "$part")
        if [ -n "$size" ]; then
            if [ "$have" -eq "$size" ]; then
                say "$name: $part is already complete ($have bytes)"
                return 0
            fi
            if [ "$have" -gt "$size" ]; then
                warn "$part is larger ($have bytes) than the server's file ($size bytes); starting over"
                rm -f "$part"
                have=0
            fi
        fi
        if [ "$have" -gt 0 ]; then
            say "$name: resuming download at byte $have${size:+ of $size} -> $part"
        else
            say "$name: downloading${size:+ $size bytes} -> $part"
        fi
        rc=0
        code=$(curl "$progress" --show-error --fail --location --continue-at - \
            --connect-timeout 30 --speed-limit 1024 --speed-time 60 \
            --output "$part" --write-out '%{http_code}' "$url") || rc=$?
        case $rc in
            0) return 0 ;;
            33)
                warn "the server cannot resume $name; starting its download over"
                rm -f "$part"
                ;;
            22)
                if [ "$code" = 416 ]; then
                    warn "the server rejected the resume offset for $name; starting its download over"
                    rm -f "$part"
                else
                    die "$name: download failed: the server answered HTTP $code for $url"
                fi
                ;;
            18 | 28 | 52 | 55 | 56)
                if [ "$attempt" -ge "$max_attempts" ]; then
                    die "$name: download of $url broke off (curl exit $rc) $attempt times; the partial data is kept in $part, re-run to resume"
                fi
                warn "download of $name broke off (curl exit $rc); resuming in ${retry_delay}s (attempt $((attempt + 1)) of $max_attempts)"
                sleep "$retry_delay"
                ;;
            *)
                die "$name: download of $url failed (curl exit $rc); partial data, if any, is kept in $part, re-run to resume"
                ;;
        esac
        attempt=$((attempt + 1))
        if [ "$attempt" -gt "$max_attempts" ]; then
            die "$name: download of $url failed after $max_attempts attempts"
        fi
    done
}

zip_test() {
    if [ "$zip_tool" = unzip ]; then
        unzip -tq "$1" </dev/null
    else
        python3 - "$1" <<'PY'
import sys, zipfile
try:
    with zipfile.ZipFile(sys.argv[1]) as z:
        bad = z.testzip()
except Exception as e:  # BadZipFile, zlib.error, OSError, ...
    print(e)
    sys.exit(1)
if bad is not None:
    print("bad CRC or data in member %s" % bad)
    sys.exit(1)
PY
    fi
}

zip_extract() {
    if [ "$zip_tool" = unzip ]; then
        unzip -q -o "$1" -d "$2" </dev/null
    else
        python3 - "$1" "$2" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2])
PY
    fi
}

# Move a bad archive aside and stop.
corrupt() {
    local name=$1 zip=$2 why=$3 details=${4:-}
    mv -f "$zip" "$zip.corrupt"
    {
        printf '%s: error: %s: archive %s is corrupt: %s.\n' "$PROG" "$name" "$zip" "$why"
        printf '  It was moved to %s; re-run %s to download it again.\n' "$zip.corrupt" "$PROG"
        if [ -n "$details" ]; then
            printf '%s\n' "$details" | awk 'NR <= 5 { print "  | " $0 }'
        fi
    } >&2
    exit 1
}

verify() {
    local name=$1 zip=$2 size=$3 have out
    have=$(file_size "$zip")
    if [ -n "$size" ]; then
        if [ "$have" != "$size" ]; then
            corrupt "$name" "$zip" "its size is $have bytes but the server says $size bytes"
        fi
        say "$name: size matches the server ($have bytes)"
    else
        say "$name: the server reported no size; skipping the size check ($have bytes)"
    fi
    say "$name: testing zip integrity (reads the whole archive)"
    if ! out=$(zip_test "$zip" 2>&1); then
        corrupt "$name" "$zip" "the zip integrity test failed" "$out"
    fi
}

write_marker() {
    local marker=$1
    shift
    printf '%s\n' "$@" >"$marker.tmp"
    mv -f "$marker.tmp" "$marker"
}

install_images() {
    local name=$1 zip=$2 tmp=$3 url=$4 dest old
    dest=$images_dir
    old=$dest/.$name.old
    [ -d "$tmp/$name" ] || die "$name: unexpected layout in $zip: no top-level $name/ folder"
    if [ -e "$dest/$name" ]; then
        say "$name: replacing $dest/$name, which has no completion marker (an earlier run was interrupted?)"
        rm -rf "$old"
        mv "$dest/$name" "$old"
    fi
    mv "$tmp/$name" "$dest/$name"
    rm -rf "$tmp" "$old"
    write_marker "$dest/.$name.complete" "archive=$name.zip" "source=$url" \
        "completed=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

install_annotations() {
    local name=$1 zip=$2 tmp=$3 url=$4 dest f base files=
    dest=$ann_dir
    [ -d "$tmp/annotations" ] || die "$name: unexpected layout in $zip: no top-level annotations/ folder"
    for f in "$tmp"/annotations/*; do
        [ -e "$f" ] || continue
        base=${f##*/}
        if [ -d "$f" ] || [ -d "$dest/$base" ]; then
            rm -rf "${dest:?}/$base"
        fi
        mv -f "$f" "$dest/$base"
        files="${files:+$files
}file=$base"
    done
    [ -n "$files" ] || die "$name: $zip contains no files under annotations/"
    rm -rf "$tmp"
    write_marker "$dest/.$name.complete" "archive=$name.zip" "source=$url" \
        "completed=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$files"
}

current_tmp=
cleanup() {
    if [ -n "$current_tmp" ]; then
        rm -rf "$current_tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

extract() {
    local name=$1 zip=$2 url=$3 dest tmp
    dest=$(dest_dir "$name")
    tmp=$dest/.$name.tmp
    mkdir -p "$dest"
    rm -f "$dest/.$name.complete"
    rm -rf "$tmp"
    mkdir "$tmp"
    current_tmp=$tmp
    say "$name: extracting into $(target_desc "$name")"
    if ! zip_extract "$zip" "$tmp"; then
        die "$name: extracting $zip failed (disk full?)"
    fi
    if [ "$name" = "$ANN_NAME" ]; then
        install_annotations "$name" "$zip" "$tmp" "$url"
    else
        install_images "$name" "$zip" "$tmp" "$url"
    fi
    current_tmp=
}

# Remove what an interrupted run may have left behind for NAME.
clean_leftovers() {
    local dest
    dest=$(dest_dir "$1")
    if [ -e "$dest/.$1.tmp" ] || [ -e "$dest/.$1.old" ]; then
        say "$1: removing leftovers of an interrupted run in $dest/"
        rm -rf "$dest/.$1.tmp" "$dest/.$1.old"
    fi
    rm -f "$dest/.$1.complete.tmp"
}

process() {
    local name=$1 url zip part size
    url=$(archive_url "$name")
    zip=$dl_dir/$name.zip
    part=$zip.part
    clean_leftovers "$name"
    say "$name: fetching $url"
    size=$(remote_size "$url")
    if [ -f "$zip" ]; then
        say "$name: found $zip from an earlier run"
    else
        download "$name" "$url" "$part" "$size"
        mv -f "$part" "$zip"
    fi
    verify "$name" "$zip" "$size"
    extract "$name" "$zip" "$url"
    if [ "$keep_zips" = 1 ]; then
        say "$name: done, kept $zip"
    else
        rm -f "$zip"
        say "$name: done, removed $zip (use --keep-zips to keep it)"
    fi
}

# ---------------------------------------------------------------- main
todo=
for name in $names; do
    if is_present "$name"; then
        say "$name: already present in $(target_desc "$name"), skipping"
    else
        todo="$todo $name"
    fi
done

if [ -z "$todo" ]; then
    say "Nothing to do: everything requested is already present under $root/."
    exit 0
fi

command -v curl >/dev/null 2>&1 ||
    die "curl is needed to download COCO but was not found in PATH (install it, e.g. 'apt-get install curl')"
if command -v unzip >/dev/null 2>&1; then
    zip_tool=unzip
elif command -v python3 >/dev/null 2>&1; then
    zip_tool=python3
    warn "unzip not found; using python3's zipfile instead (slower)"
else
    die "unzip (or python3) is needed to extract the archives but neither was found in PATH"
fi

mkdir -p "$dl_dir" 2>/dev/null || {
    [ -e "$root" ] && [ ! -d "$root" ] && die "--root $root is a file, not a folder"
    die "cannot create --root $root (or its downloads/ folder): check the path and its permissions"
}
[ -w "$dl_dir" ] || die "cannot write into --root $root: check its permissions"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dl_dir/.lock"
    flock -n 9 || die "another $PROG run is already working in $root (lock: $dl_dir/.lock)"
fi

for name in $todo; do
    process "$name"
done
say "All done: images in $images_dir/, annotations in $ann_dir/."
