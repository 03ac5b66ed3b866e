//! kts-unpack: applies one OCI image layer (a tar, maybe gzipped) onto a rootfs directory.
//!
//! The layer is hostile. Rather than agree with GNU tar on how to read its headers, this helper opens
//! its input and then chroot()s into the rootfs before it parses a single byte, so whatever name,
//! link or symlink an entry carries, the kernel resolves it beneath the rootfs (absolute symlinks and
//! ".." included). It then drops every capability but the few that keep owners and modes, so it can
//! neither leave the chroot, mount, nor create device nodes, even if the parser were subverted.
//!
//! Usage: kts-unpack --input FILE --rootfs DIR [--gzip] --max-bytes N --max-entries N
//! Prints one line of JSON on success ({"entries":N,"bytes":N,"skippedDevices":N}); one line on stderr
//! and exit 1 when the layer is refused, exit 2 when the helper cannot start.

use std::cell::Cell;
use std::collections::HashSet;
use std::error::Error;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Component, Path, PathBuf};
use std::process::exit;
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use tar::{Archive, Entry, EntryType};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): neither whiteouts nor content.
const AUFS_META_PREFIX: &str = ".wh..wh.";
/// Bounds what a hostile pax header or long name can make the parser hold in memory.
const ADDRESS_SPACE_LIMIT: u64 = 1 << 30;

struct Options {
    input: PathBuf,
    rootfs: PathBuf,
    gzip: bool,
    max_bytes: u64,
    max_entries: u64,
}

#[derive(Default)]
struct Report {
    entries: u64,
    bytes: u64,
    skipped_devices: u64,
}

/// Why an unpack stopped: the layer's fault (exit 1) or the helper's setup (exit 2).
enum Failure {
    Layer(String),
    Setup(String),
}

fn main() {
    let outcome = parse_args().and_then(|options| {
        let input = File::open(&options.input)
            .map_err(|e| Failure::Setup(format!("cannot open {}: {e}", options.input.display())))?;
        let input = confine(&options.rootfs, input).map_err(Failure::Setup)?;
        apply_layer(input, &options).map_err(Failure::Layer)
    });
    match outcome {
        Ok(report) => println!(
            "{{\"entries\":{},\"bytes\":{},\"skippedDevices\":{}}}",
            report.entries, report.bytes, report.skipped_devices
        ),
        Err(Failure::Layer(message)) => fail(1, &message),
        Err(Failure::Setup(message)) => fail(2, &message),
    }
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("kts-unpack: {}", message.replace('\n', " "));
    exit(code)
}

fn parse_args() -> Result<Options, Failure> {
    let usage = || {
        Failure::Setup(
            "usage: kts-unpack --input FILE --rootfs DIR [--gzip] --max-bytes N --max-entries N"
                .into(),
        )
    };
    let (mut input, mut rootfs, mut gzip, mut max_bytes, mut max_entries) =
        (None, None, false, None, None);
    let mut args = std::env::args_os().skip(1);
    while let Some(flag) = args.next() {
        match flag.to_str() {
            Some("--gzip") => gzip = true,
            Some("--input") => input = args.next().map(PathBuf::from),
            Some("--rootfs") => rootfs = args.next().map(PathBuf::from),
            Some("--max-bytes") => {
                max_bytes = args.next().and_then(|v| v.to_str()?.parse::<u64>().ok())
            }
            Some("--max-entries") => {
                max_entries = args.next().and_then(|v| v.to_str()?.parse::<u64>().ok())
            }
            _ => return Err(usage()),
        }
    }
    match (input, rootfs, max_bytes, max_entries) {
        (Some(input), Some(rootfs), Some(max_bytes), Some(max_entries)) => Ok(Options {
            input,
            rootfs,
            gzip,
            max_bytes,
            max_entries,
        }),
        _ => Err(usage()),
    }
}

/// Leaves the process holding only the layer (as fd 0) inside a chroot of the rootfs, with the
/// capabilities to set owners, modes and times and no others.
fn confine(rootfs: &Path, input: File) -> Result<File, String> {
    let os_error = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    let rootfs_c = CString::new(rootfs.as_os_str().as_bytes())
        .map_err(|_| "rootfs path has a NUL byte".to_string())?;
    // SAFETY: plain syscalls on valid C strings and fds this process owns.
    unsafe {
        if libc::dup2(input.as_raw_fd(), 0) < 0 {
            return Err(os_error("dup2"));
        }
        // No descriptor of a host directory may survive into the chroot: fchdir through one escapes.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            return Err(os_error("close_range"));
        }
        if libc::chdir(rootfs_c.as_ptr()) != 0
            || libc::chroot(c".".as_ptr()) != 0
            || libc::chdir(c"/".as_ptr()) != 0
        {
            return Err(os_error(&format!(
                "cannot chroot into {}",
                rootfs.display()
            )));
        }
        libc::umask(0o022);
    }
    std::mem::forget(input); // its fd was closed by close_range; fd 0 is the layer now
    keep_only_file_capabilities()?;
    // SAFETY: prctl and setrlimit with valid arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os_error("PR_SET_NO_NEW_PRIVS"));
        }
        let limit = libc::rlimit {
            rlim_cur: ADDRESS_SPACE_LIMIT,
            rlim_max: ADDRESS_SPACE_LIMIT,
        };
        if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
            return Err(os_error("setrlimit"));
        }
        Ok(File::from_raw_fd(0))
    }
}

/// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID: what numeric owners,
/// setuid bits and times need. Without CAP_SYS_CHROOT and CAP_MKNOD the kernel itself refuses a way
/// out of the chroot and any device node.
fn keep_only_file_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const KEPT: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4);
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: KEPT,
            permitted: KEPT,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, which is what we pass.
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    } != 0
    {
        return Err(format!("capset: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Counts the uncompressed bytes read and fails the read once they pass the cap.
struct CappedReader<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    max: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.count.get() + n as u64;
        self.count.set(total);
        if total > self.max {
            self.exceeded.set(true);
            return Err(io::Error::other("layer is over its byte cap"));
        }
        Ok(n)
    }
}

/// What this layer has written, so an opaque whiteout hides lower layers only.
struct LayerState {
    written: HashSet<PathBuf>,
    /// Directories and their mtimes, set again at the end: later entries in them change them.
    directory_times: Vec<(PathBuf, u64)>,
    report: Report,
    file_bytes: u64,
}

fn apply_layer(input: File, options: &Options) -> Result<Report, String> {
    let count = Rc::new(Cell::new(0));
    let exceeded = Rc::new(Cell::new(false));
    let source: Box<dyn Read> = if options.gzip {
        Box::new(MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let reader = CappedReader {
        inner: source,
        count: count.clone(),
        max: options.max_bytes,
        exceeded: exceeded.clone(),
    };
    let bytes_cap = || {
        format!(
            "the layer decompresses to more than max_layer_bytes ({}) bytes",
            options.max_bytes
        )
    };
    let mut state = LayerState {
        written: HashSet::new(),
        directory_times: Vec::new(),
        report: Report::default(),
        file_bytes: 0,
    };
    let result = apply_entries(reader, options, &mut state);
    if exceeded.get() {
        return Err(bytes_cap());
    }
    result?;
    state.report.bytes = count.get();
    Ok(state.report)
}

fn apply_entries<R: Read>(
    reader: R,
    options: &Options,
    state: &mut LayerState,
) -> Result<(), String> {
    let mut archive = Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries().map_err(|e| describe(&e))? {
        let mut entry = entry.map_err(|e| format!("cannot read the layer: {}", describe(&e)))?;
        state.report.entries += 1;
        if state.report.entries > options.max_entries {
            return Err(format!(
                "the layer has more than max_layer_entries ({}) entries",
                options.max_entries
            ));
        }
        state.file_bytes += entry.size();
        if state.file_bytes > options.max_bytes {
            return Err(format!(
                "the layer's files add up to more than max_layer_bytes ({}) bytes",
                options.max_bytes
            ));
        }
        apply_entry(&mut entry, state)?;
    }
    // Read to the end so the byte count (and cap) covers all that Node hashed for the diff_id.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| format!("cannot read the layer: {e}"))?;
    for (dir, mtime) in &state.directory_times {
        set_mtime(dir, *mtime)
            .map_err(|e| format!("cannot set the mtime of {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let time = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: a valid C string and two timespecs; AT_SYMLINK_NOFOLLOW leaves a symlink's target alone.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            [time, time].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn apply_entry<R: Read>(entry: &mut Entry<R>, state: &mut LayerState) -> Result<(), String> {
    let raw_path = entry.path().map_err(|e| describe(&e))?.into_owned();
    let path = beneath_root(&raw_path)?;
    if path == Path::new("/") {
        return Ok(());
    }
    let kind = entry.header().entry_type();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_entry = |e: String| format!("entry \"{}\": {e}", raw_path.display());
    if name.starts_with(WHITEOUT_PREFIX) {
        return apply_whiteout(&path, &name, &state.written).map_err(in_entry);
    }
    match kind {
        // A device node in an image would let a wasm module or a guest open a host device through it.
        EntryType::Char | EntryType::Block => {
            state.report.skipped_devices += 1;
            return Ok(());
        }
        EntryType::Fifo => {
            replace_existing(&path, false).map_err(|e| in_entry(e.to_string()))?;
            make_fifo(&path, entry.header()).map_err(in_entry)?
        }
        _ => {
            replace_existing(&path, kind == EntryType::Directory)
                .map_err(|e| in_entry(e.to_string()))?;
            if kind == EntryType::Link {
                let target = entry
                    .link_name()
                    .map_err(|e| describe(&e))?
                    .unwrap_or_default()
                    .into_owned();
                beneath_root(&target).map_err(in_entry)?;
            }
            entry.unpack_in("/").map_err(|e| in_entry(describe(&e)))?;
        }
    }
    if kind == EntryType::Directory {
        state
            .directory_times
            .push((path.clone(), entry.header().mtime().unwrap_or(0)));
    }
    state.written.insert(path);
    Ok(())
}

/// As in containerd: what a lower layer has at the path goes, unless both are directories (which merge).
fn replace_existing(path: &Path, entry_is_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && entry_is_dir => Ok(()),
        Ok(_) => remove_any(path),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The entry's name as an absolute path in the chroot; a ".." is refused rather than resolved.
fn beneath_root(raw: &Path) -> Result<PathBuf, String> {
    let mut path = PathBuf::from("/");
    for component in raw.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::ParentDir => {
                return Err(format!("\"{}\" has a \"..\" component", raw.display()))
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(path)
}

/// `.wh.NAME` removes NAME of a lower layer; `.wh..wh..opq` empties its directory of lower layers' files.
fn apply_whiteout(path: &Path, name: &str, written: &HashSet<PathBuf>) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if name == OPAQUE_WHITEOUT {
        return clear_lower(dir, written).map_err(|e| format!("opaque whiteout: {e}"));
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(());
    }
    let hidden = &name[WHITEOUT_PREFIX.len()..];
    if hidden.is_empty() || hidden == "." || hidden == ".." {
        return Err(format!("malformed whiteout \"{name}\""));
    }
    remove_any(&dir.join(hidden)).map_err(|e| format!("whiteout: {e}"))
}

fn clear_lower(dir: &Path, written: &HashSet<PathBuf>) -> io::Result<()> {
    let children = match fs::read_dir(dir) {
        Ok(children) => children,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    for child in children {
        let child = child?.path();
        if !written.contains(&child) {
            remove_any(&child)?;
        } else if fs::symlink_metadata(&child)?.is_dir() {
            clear_lower(&child, written)?;
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The tar crate would write a fifo as a regular file; make the real thing, owner and mode included.
fn make_fifo(path: &Path, header: &tar::Header) -> Result<(), String> {
    let mode = header.mode().map_err(|e| e.to_string())? & 0o7777;
    let (uid, gid) = (
        header.uid().map_err(|e| e.to_string())?,
        header.gid().map_err(|e| e.to_string())?,
    );
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let c_path =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| "name has a NUL byte".to_string())?;
    // SAFETY: valid C string; mkfifo, lchown and chmod touch only that path.
    unsafe {
        if libc::mkfifo(c_path.as_ptr(), 0o600) != 0
            || libc::lchown(c_path.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) != 0
            || libc::chmod(c_path.as_ptr(), mode as libc::mode_t) != 0
        {
            return Err(format!("mkfifo: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// An io::Error with the causes the tar crate wraps in it, on one line.
fn describe(error: &io::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}
