# Shared by the setup and build scripts (source it; bash only).

# ensure_debian_packages <who> <package>...: installs the ones not installed yet, one apt-get run.
ensure_debian_packages() {
  local who=$1 package missing=()
  shift
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  if (( ${#missing[@]} > 0 )); then
    echo "$who: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
