//! kts-wasm-runner: runs one WASI preview 1 module (a wasm container's init or an exec) for the
//! kuasar-ts daemon, in a process of its own.
//!
//! Isolation, in the order it is relied on:
//! - file access goes only through wasmtime-wasi's preopens, which cap-std resolves beneath their
//!   directory (openat2 RESOLVE_BENEATH: the kernel refuses `..`, absolute and escaping symlinks);
//! - the process has a mount namespace of its own whose whole tree is a tmpfs holding the rootfs
//!   and the preopened directories (the host's tree is detached, so no fd or path leads back to
//!   it), is chrooted into the rootfs, keeps only the file-owner capabilities, has
//!   PR_SET_NO_NEW_PRIVS, and holds no fd but stdio, the control socket and its preopens;
//! - it dies with the daemon (PR_SET_PDEATHSIG).
//!
//! Usage (argument array from the daemon, never a shell):
//!   kts-wasm-runner --parent-pid PID --rootfs DIR --scratch EMPTY_DIR --memory-limit-pages N
//!                   [--preopen GUEST HOST ro|rw]... [--stdin PATH] --module GUEST_PATH -- ARGV...
//! fd 0-2 are the module's stdio (--stdin replaces fd 0 with PATH, containerd's FIFO, opened here
//! where a blocking open stalls only this process); fd 3 is the control socket. Protocol on fd 3:
//!   daemon → runner: the module's environment as `KEY=value\0` entries ended by an empty one
//!     (not argv, which /proc shows to everyone; not the runner's own environment, which the
//!     dynamic loader would obey before main, e.g. LD_PRELOAD from an image);
//!   runner → daemon: `ready` | `refused <why>` | `memory <initial pages>`;
//!   daemon → runner: one byte to run `_start` (end of file: give up);
//!   runner → daemon: `exited <code>` | `trapped <memory pages> <message>` | `failed <message>`.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::process::exit;

use wasmtime::{Config, Engine, ExternType, Instance, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

const CONTROL_FD: i32 = 3;
const WASI_MODULE: &str = "wasi_snapshot_preview1";
const PAGE_BYTES: u64 = 65_536;
const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;
const MAX_ENV_BYTES: usize = 1024 * 1024;
const TRAP_EXIT: i32 = 134;
const FAILED_EXIT: i32 = 125;
/// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID: what root needs to use any file of a rootfs.
/// Every other capability is dropped, CAP_DAC_READ_SEARCH too (open_by_handle_at escapes a chroot).
const KEPT_CAPABILITIES: u32 = 0x1b;

struct Preopen {
    guest: String,
    host: String,
    read_only: bool,
}

struct Plan {
    parent_pid: i32,
    rootfs: String,
    /// An empty host directory the private tree's tmpfs is mounted on (in our namespace only).
    scratch: String,
    memory_limit_pages: u64,
    preopens: Vec<Preopen>,
    module: String,
    stdin: Option<String>,
    args: Vec<String>,
}

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// A module instantiated and waiting for `_start`.
struct Prepared {
    store: Store<State>,
    instance: Instance,
    start: TypedFunc<(), ()>,
}

fn main() {
    let mut plan = match parse_args(std::env::args().skip(1).collect()) {
        Ok(plan) => plan,
        Err(why) => {
            eprintln!("kts-wasm-runner: {why}");
            exit(2);
        }
    };
    // SAFETY: fd 3 is the control socket the daemon passed; nothing else owns it.
    let mut control = unsafe { File::from_raw_fd(CONTROL_FD) };
    let Prepared { mut store, instance, start } = match prepare(&mut plan, &mut control) {
        Ok(prepared) => prepared,
        Err(Refusal::Why(why)) => {
            report(&mut control, &format!("refused {why}"));
            exit(FAILED_EXIT);
        }
        Err(Refusal::Memory(pages)) => {
            report(&mut control, &format!("memory {pages}"));
            exit(FAILED_EXIT);
        }
    };
    report(&mut control, "ready");
    let mut go = [0u8; 1];
    if !matches!(control.read(&mut go), Ok(1)) {
        exit(FAILED_EXIT);
    }
    let result = start.call(&mut store, ());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let (line, code) = match result {
        Ok(()) => ("exited 0".to_owned(), 0),
        Err(error) => describe_end(&error, &instance, &mut store),
    };
    report(&mut control, &line);
    exit(code & 0xff);
}

/// Everything up to a module instantiated and waiting for `_start`, confined as the header says.
fn prepare(plan: &mut Plan, control: &mut File) -> Result<Prepared, Refusal> {
    confine_process(plan.parent_pid).map_err(refusal("the runner could not confine itself"))?;
    if let Some(path) = plan.stdin.clone() {
        replace_stdin(&path).map_err(|why| Refusal::Why(format!("cannot open its stdin {path}: {why}")))?;
    }
    enter_private_tree(plan).map_err(refusal("the runner could not build its private mount tree"))?;
    let env = read_env(control).map_err(refusal("the daemon sent no environment"))?;
    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdio().allow_blocking_current_thread(true).args(&plan.args).envs(&env);
    for preopen in &plan.preopens {
        let perms = if preopen.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        builder.preopened_dir(&preopen.host, &preopen.guest, perms).map_err(|why| Refusal::Why(format!("cannot open {} for {}: {why}", preopen.host, preopen.guest)))?;
    }
    enter_rootfs(&plan.rootfs).map_err(refusal("the runner could not enter the rootfs"))?;
    let (engine, module) = load_module(plan)?;
    let limits = StoreLimitsBuilder::new().memory_size((plan.memory_limit_pages * PAGE_BYTES) as usize).instances(1).build();
    let mut store = Store::new(&engine, State { wasi: builder.build_p1(), limits });
    store.limiter(|state| &mut state.limits);
    let mut linker: Linker<State> = Linker::new(&engine);
    p1::add_to_linker_sync(&mut linker, |state| &mut state.wasi).map_err(|why| Refusal::Why(format!("WASI could not be linked: {why}")))?;
    let instance = linker.instantiate(&mut store, &module).map_err(|why| Refusal::Why(format!("the module cannot be instantiated: {}", error_text(&why))))?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|why| Refusal::Why(format!("its _start is not a function of no arguments: {why}")))?;
    Ok(Prepared { store, instance, start })
}

/// Turns an error into a refusal that says what was being done.
fn refusal(context: &'static str) -> impl Fn(String) -> Refusal {
    move |why| Refusal::Why(format!("{context}: {why}"))
}

/// The report line and exit status for a `_start` that did not return: proc_exit, a trap, or a host error.
fn describe_end(error: &wasmtime::Error, instance: &Instance, store: &mut Store<State>) -> (String, i32) {
    if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
        return (format!("exited {code}"), *code);
    }
    let pages = instance.get_memory(&mut *store, "memory").map(|memory| memory.size(&*store)).unwrap_or(0);
    match error.downcast_ref::<Trap>() {
        // The daemon says "wasm trap:" itself.
        Some(trap) => (format!("trapped {pages} {}", trap.to_string().trim_start_matches("wasm trap: ")), TRAP_EXIT),
        None => (format!("failed {}", error_text(error)), TRAP_EXIT),
    }
}

fn parse_args(args: Vec<String>) -> Result<Plan, String> {
    let mut plan = Plan { parent_pid: 0, rootfs: String::new(), scratch: String::new(), memory_limit_pages: 0, preopens: Vec::new(), module: String::new(), stdin: None, args: Vec::new() };
    let mut rest = args.into_iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--parent-pid" => plan.parent_pid = next(&flag, &mut rest)?.parse().map_err(|_| "--parent-pid is not a pid")?,
            "--rootfs" => plan.rootfs = next(&flag, &mut rest)?,
            "--scratch" => plan.scratch = next(&flag, &mut rest)?,
            "--memory-limit-pages" => plan.memory_limit_pages = next(&flag, &mut rest)?.parse().map_err(|_| "--memory-limit-pages is not a number")?,
            "--module" => plan.module = next(&flag, &mut rest)?,
            "--stdin" => plan.stdin = Some(next(&flag, &mut rest)?),
            "--preopen" => {
                let guest = next(&flag, &mut rest)?;
                let host = next(&flag, &mut rest)?;
                let read_only = next(&flag, &mut rest)? == "ro";
                plan.preopens.push(Preopen { guest, host, read_only });
            }
            "--" => {
                plan.args = rest.collect();
                break;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if plan.parent_pid <= 0 || plan.rootfs.is_empty() || plan.scratch.is_empty() || !plan.module.starts_with('/') || plan.args.is_empty() {
        return Err("--parent-pid, --rootfs, an absolute --module and the module's argv after -- are needed".into());
    }
    Ok(plan)
}

fn next(name: &str, rest: &mut std::vec::IntoIter<String>) -> Result<String, String> {
    rest.next().ok_or(format!("{name} needs a value"))
}

/// Dies with the daemon, gains no privilege, and keeps no fd it was not given on purpose.
fn confine_process(parent_pid: i32) -> Result<(), String> {
    // SAFETY: prctl and close_range with constant arguments touch only this process.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(format!("PR_SET_PDEATHSIG: {}", std::io::Error::last_os_error()));
        }
        // The daemon may have died before the line above: then nobody would ever kill us.
        if libc::getppid() != parent_pid {
            exit(FAILED_EXIT);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(format!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error()));
        }
        if libc::syscall(libc::SYS_close_range, (CONTROL_FD + 1) as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) != 0 {
            return Err(format!("close_range: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Opens `path` (blocking until a FIFO has a writer) as fd 0.
fn replace_stdin(path: &str) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = File::open(path)?.into_raw_fd();
    // SAFETY: dup2 onto 0 and close of the fd just opened touch only fds this process owns.
    unsafe {
        if libc::dup2(fd, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}

/// Moves this process into a mount namespace whose root is a tmpfs holding only the rootfs (at
/// /root) and each preopened directory (at /mnt/<n>), and rewrites the plan's paths to match.
fn enter_private_tree(plan: &mut Plan) -> Result<(), String> {
    let scratch = plan.scratch.clone();
    // SAFETY: each call gets valid C strings or null where the ABI allows; they change only this
    // process's own (new) mount namespace.
    unsafe {
        sys(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
        // Nothing we mount from now on may propagate back to the host.
        sys(libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()), "making / private")?;
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        sys(libc::mount(c"kts-wasm".as_ptr(), cstr(&scratch)?.as_ptr(), c"tmpfs".as_ptr(), flags, c"size=64k,mode=0755".as_ptr().cast()), "mounting the tmpfs")?;
    }
    let inside = bind_into(&plan.rootfs, &scratch, "root")?;
    let host_rootfs = std::mem::replace(&mut plan.rootfs, inside);
    for (index, preopen) in plan.preopens.iter_mut().enumerate() {
        preopen.host = if preopen.host == host_rootfs { plan.rootfs.clone() } else { bind_into(&preopen.host, &scratch, &format!("mnt/{index}"))? };
    }
    pivot_into(&scratch)
}

/// Binds `source` (recursively, keeping its read-only flag) at `<scratch>/<name>`; returns its path after the pivot.
fn bind_into(source: &str, scratch: &str, name: &str) -> Result<String, String> {
    let target = format!("{scratch}/{name}");
    std::fs::create_dir_all(&target).map_err(|why| format!("mkdir {target}: {why}"))?;
    // SAFETY: valid C strings; a bind mount in our private namespace.
    unsafe {
        sys(libc::mount(cstr(source)?.as_ptr(), cstr(&target)?.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()), &format!("binding {source}"))?;
    }
    Ok(format!("/{name}"))
}

/// pivot_root(".", ".") onto `new_root`, then detaches the old root stacked on it (as runc does).
fn pivot_into(new_root: &str) -> Result<(), String> {
    let old_root = File::open("/").map_err(|why| format!("open /: {why}"))?;
    // SAFETY: chdir/fchdir/pivot_root/umount2 on valid paths and an fd we own.
    unsafe {
        sys(libc::chdir(cstr(new_root)?.as_ptr()), "chdir to the new root")?;
        sys(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as i32, "pivot_root")?;
        sys(libc::fchdir(std::os::fd::AsRawFd::as_raw_fd(&old_root)), "fchdir to the old root")?;
        sys(libc::umount2(c".".as_ptr(), libc::MNT_DETACH), "detaching the old root")?;
        sys(libc::chdir(c"/".as_ptr()), "chdir /")?;
    }
    Ok(())
}

fn sys(result: i32, what: &str) -> Result<(), String> {
    if result == 0 { Ok(()) } else { Err(format!("{what}: {}", std::io::Error::last_os_error())) }
}

fn cstr(path: &str) -> Result<CString, String> {
    CString::new(path).map_err(|_| format!("{path:?} has a NUL byte"))
}

/// chroot into the rootfs and drop every capability but the file-owner ones (CAP_SYS_CHROOT first).
fn enter_rootfs(rootfs: &str) -> Result<(), String> {
    let root = CString::new(rootfs).map_err(|_| "the rootfs path has a NUL byte")?;
    // SAFETY: chroot/chdir take a valid C string; capset gets a header and two data cells as the ABI says.
    unsafe {
        if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            return Err(format!("chroot: {}", std::io::Error::last_os_error()));
        }
        let mut header = CapHeader { version: 0x2008_0522, pid: 0 };
        let data = [CapData { effective: KEPT_CAPABILITIES, permitted: KEPT_CAPABILITIES, inheritable: 0 }, CapData { effective: 0, permitted: 0, inheritable: 0 }];
        if libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) != 0 {
            return Err(format!("capset: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `KEY=value\0` entries until an empty one, at most MAX_ENV_BYTES in all.
fn read_env(control: &mut File) -> Result<Vec<(String, String)>, String> {
    let mut block = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match control.read(&mut byte) {
            Ok(1) => block.push(byte[0]),
            Ok(_) => return Err("end of file".into()),
            Err(why) => return Err(why.to_string()),
        }
        if block.ends_with(&[0, 0]) || block == [0] {
            break;
        }
        if block.len() > MAX_ENV_BYTES {
            return Err("more than 1 MiB".into());
        }
    }
    let text = String::from_utf8(block).map_err(|_| "not UTF-8")?;
    Ok(text.split('\0').filter_map(|entry| entry.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}

enum Refusal {
    Why(String),
    /// The module's memory needs this many pages at start, more than the limit.
    Memory(u64),
}

/// Reads the module from inside the rootfs (we are chrooted: the kernel keeps the path there) and
/// compiles it, refusing anything that is not a WASI preview 1 command fitting the memory limit.
fn load_module(plan: &Plan) -> Result<(Engine, Module), Refusal> {
    let refuse = |why: String| Refusal::Why(why);
    let file = File::open(&plan.module).map_err(|_| refuse("no such file in the container's rootfs (args[0], usually the image's Entrypoint, names the module)".into()))?;
    let stats = file.metadata().map_err(|why| refuse(why.to_string()))?;
    if !stats.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if stats.len() > MAX_MODULE_BYTES {
        return Err(refuse(format!("{} bytes is more than the {MAX_MODULE_BYTES} a module may have", stats.len())));
    }
    let mut bytes = Vec::with_capacity(stats.len() as usize);
    file.take(MAX_MODULE_BYTES).read_to_end(&mut bytes).map_err(|why| refuse(why.to_string()))?;
    if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] != [1, 0, 0, 0] {
        return Err(refuse("the module is not a core WebAssembly module of version 1 (a component?); only WASI preview 1 core modules run here".into()));
    }
    let engine = Engine::new(&Config::new()).map_err(|why| refuse(format!("the engine cannot start: {why}")))?;
    let module = Module::new(&engine, &bytes).map_err(|why| refuse(format!("not a valid WebAssembly module: {}", error_text(&why))))?;
    check_wasi_command(&module, plan.memory_limit_pages)?;
    Ok((engine, module))
}

fn check_wasi_command(module: &Module, memory_limit_pages: u64) -> Result<(), Refusal> {
    let foreign: Vec<String> = module
        .imports()
        .filter(|import| import.module() != WASI_MODULE || !matches!(import.ty(), ExternType::Func(_)))
        .map(|import| format!("{}.{}", import.module(), import.name()))
        .collect();
    if !foreign.is_empty() {
        let more = if foreign.len() > 5 { ", …" } else { "" };
        return Err(Refusal::Why(format!("it imports {}{more}; only {WASI_MODULE} functions are provided", foreign[..foreign.len().min(5)].join(", "))));
    }
    let mut has_start = false;
    let mut has_memory = false;
    for export in module.exports() {
        match (export.name(), export.ty()) {
            ("_start", ExternType::Func(_)) => has_start = true,
            ("memory", ExternType::Memory(memory)) => {
                has_memory = true;
                if memory.minimum() > memory_limit_pages {
                    return Err(Refusal::Memory(memory.minimum()));
                }
            }
            _ => {}
        }
    }
    if !has_start || !has_memory {
        return Err(Refusal::Why("it is not a WASI command: it must export a \"_start\" function and its \"memory\" (reactor modules are not run)".into()));
    }
    Ok(())
}

/// One line, whatever the error holds: the protocol is line based.
fn error_text(error: &wasmtime::Error) -> String {
    format!("{error:#}").replace('\n', " ")
}

fn report(control: &mut File, line: &str) {
    let _ = control.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
}
