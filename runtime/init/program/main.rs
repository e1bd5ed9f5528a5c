//! aac-init: `aac-init ENVFILE COMMAND [ARG...]`, the first process of a containerd agent that
//! takes secrets as environment variables. It reads `KEY=VALUE` entries (NUL-separated) from
//! ENVFILE, a file on the agent's private secrets tmpfs that aac wrote just before the start,
//! removes the file, and execs COMMAND (looked up in the new environment's PATH) with the
//! environment the OCI spec gave plus those entries. The values thus reach the process without
//! ever being in the OCI spec, containerd's metadata or the bundle's config.json.
//!
//! It runs inside any image, so it is static and free-standing: its own `_start`, raw system
//! calls, no C library. Exit codes follow docker: 127 when COMMAND is not found, 126 when it
//! cannot be executed, 125 when the secrets cannot be read.

#![no_std]
#![no_main]
#![no_builtins]

use core::arch::{asm, global_asm};
use core::ptr;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const LSEEK: usize = 8;
    pub const MMAP: usize = 9;
    pub const EXECVE: usize = 59;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const UNLINKAT: usize = 263;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const READ: usize = 63;
    pub const WRITE: usize = 64;
    pub const CLOSE: usize = 57;
    pub const LSEEK: usize = 62;
    pub const MMAP: usize = 222;
    pub const EXECVE: usize = 221;
    pub const EXIT_GROUP: usize = 94;
    pub const OPENAT: usize = 56;
    pub const UNLINKAT: usize = 35;
}

const AT_FDCWD: isize = -100;
const O_RDONLY_CLOEXEC: usize = 0o2000000;
const ENOENT: isize = 2;
const ENOTDIR: isize = 20;
const EACCES: isize = 13;
const PROT_RW: usize = 0x3;
const MAP_PRIVATE_ANON: usize = 0x22;
const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    asm!(
        "syscall",
        inlateout("rax") n as isize => ret,
        in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
        in("r10") a[3], in("r8") a[4], in("r9") a[5],
        lateout("rcx") _, lateout("r11") _,
        options(nostack)
    );
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    asm!(
        "svc 0",
        in("x8") n,
        inlateout("x0") a[0] as isize => ret,
        in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
        options(nostack)
    );
    ret
}

#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call aac_init_main",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "mov x0, sp",
    "bl aac_init_main",
    "brk #0",
);

fn exit(code: usize) -> ! {
    // SAFETY: exit_group takes no pointers.
    unsafe { syscall(nr::EXIT_GROUP, [code, 0, 0, 0, 0, 0]) };
    loop {}
}

fn write_err(bytes: &[u8]) {
    // SAFETY: the pointer and length come from a valid slice.
    unsafe { syscall(nr::WRITE, [2, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0]) };
}

/// # Safety
/// `s` points to a NUL-terminated string.
unsafe fn c_len(s: *const u8) -> usize {
    let mut n = 0;
    while *s.add(n) != 0 {
        n += 1;
    }
    n
}

/// # Safety
/// `s` points to a NUL-terminated string that outlives the slice.
unsafe fn c_str<'a>(s: *const u8) -> &'a [u8] {
    core::slice::from_raw_parts(s, c_len(s))
}

fn die(parts: &[&[u8]], code: usize) -> ! {
    write_err(b"aac-init: ");
    for p in parts {
        write_err(p);
    }
    write_err(b"\n");
    exit(code)
}

fn key(entry: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < entry.len() && entry[i] != b'=' {
        i += 1;
    }
    &entry[..i]
}

/// # Safety
/// Called by `_start` with the initial stack pointer (argc, argv..., NULL, envp..., NULL).
#[no_mangle]
unsafe extern "C" fn aac_init_main(sp: *const usize) -> ! {
    let argc = *sp;
    let argv = sp.add(1) as *const *const u8;
    let envp = argv.add(argc + 1);
    if argc < 3 {
        die(&[b"usage: aac-init ENVFILE COMMAND [ARG...]"], 125);
    }
    let file = *argv.add(1);
    let fd = syscall(
        nr::OPENAT,
        [AT_FDCWD as usize, file as usize, O_RDONLY_CLOEXEC, 0, 0, 0],
    );
    if fd < 0 {
        die(&[b"cannot open ", c_str(file), b" (the agent's secrets)"], 125);
    }
    let fd = fd as usize;
    // Gone from the tmpfs before anything else runs.
    syscall(nr::UNLINKAT, [AT_FDCWD as usize, file as usize, 0, 0, 0, 0]);
    let size = syscall(nr::LSEEK, [fd, 0, 2, 0, 0, 0]);
    if size < 0 || syscall(nr::LSEEK, [fd, 0, 0, 0, 0, 0]) < 0 {
        die(&[b"cannot read ", c_str(file)], 125);
    }
    let size = size as usize;
    let buf = syscall(
        nr::MMAP,
        [0, size + 1, PROT_RW, MAP_PRIVATE_ANON, usize::MAX, 0],
    );
    if buf < 0 {
        die(&[b"out of memory"], 125);
    }
    let buf = buf as *mut u8;
    let mut got = 0;
    while got < size {
        let n = syscall(nr::READ, [fd, buf.add(got) as usize, size - got, 0, 0, 0]);
        if n == -4 {
            continue; // EINTR
        }
        if n <= 0 {
            die(&[b"cannot read ", c_str(file)], 125);
        }
        got += n as usize;
    }
    syscall(nr::CLOSE, [fd, 0, 0, 0, 0, 0]);
    *buf.add(size) = 0;
    let data = core::slice::from_raw_parts(buf, size + 1);

    // The new entries: NUL-separated, the last one terminated by the extra byte.
    let mut n_new = 0;
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == 0 {
            if i > start {
                n_new += 1;
            }
            start = i + 1;
        }
    }
    let mut n_old = 0;
    while !(*envp.add(n_old)).is_null() {
        n_old += 1;
    }
    let slots = n_old + n_new + 1;
    let arr = syscall(
        nr::MMAP,
        [0, slots * core::mem::size_of::<usize>(), PROT_RW, MAP_PRIVATE_ANON, usize::MAX, 0],
    );
    if arr < 0 {
        die(&[b"out of memory"], 125);
    }
    let arr = arr as *mut *const u8;
    let mut k = 0;
    let overridden = |old: &[u8]| {
        let ok = key(old);
        let mut s = 0;
        for (i, &b) in data.iter().enumerate() {
            if b == 0 {
                if i > s && key(&data[s..i]) == ok {
                    return true;
                }
                s = i + 1;
            }
        }
        false
    };
    for i in 0..n_old {
        let e = *envp.add(i);
        if !overridden(c_str(e)) {
            *arr.add(k) = e;
            k += 1;
        }
    }
    let mut path: &[u8] = DEFAULT_PATH;
    start = 0;
    for i in 0..data.len() {
        if data[i] == 0 {
            if i > start {
                *arr.add(k) = buf.add(start);
                k += 1;
            }
            start = i + 1;
        }
    }
    *arr.add(k) = ptr::null();
    for i in 0..k {
        let e = c_str(*arr.add(i));
        if key(e) == b"PATH" && e.len() > 5 {
            path = &e[5..];
        }
    }

    let args = argv.add(2);
    let cmd = c_str(*args);
    if cmd.is_empty() {
        die(&[b"no command"], 127);
    }
    if cmd.contains(&b'/') {
        let r = syscall(nr::EXECVE, [*args as usize, args as usize, arr as usize, 0, 0, 0]);
        let code = if r == -ENOENT || r == -ENOTDIR { 127 } else { 126 };
        let why: &[u8] = if code == 127 {
            b": no such file or directory"
        } else {
            b": cannot be executed"
        };
        die(&[cmd, why], code);
    }
    let mut denied = false;
    let mut full = [0u8; 4352];
    for dir in path.split(|&b| b == b':') {
        if dir.is_empty() || dir.len() + cmd.len() + 2 > full.len() {
            continue;
        }
        full[..dir.len()].copy_from_slice(dir);
        full[dir.len()] = b'/';
        full[dir.len() + 1..dir.len() + 1 + cmd.len()].copy_from_slice(cmd);
        full[dir.len() + 1 + cmd.len()] = 0;
        let r = syscall(
            nr::EXECVE,
            [full.as_ptr() as usize, args as usize, arr as usize, 0, 0, 0],
        );
        if r == -EACCES {
            denied = true;
        } else if r != -ENOENT && r != -ENOTDIR {
            denied = true;
        }
    }
    if denied {
        die(&[cmd, b": permission denied"], 126);
    }
    die(&[cmd, b": executable file not found in $PATH"], 127)
}

#[no_mangle]
unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        *d.add(i) = *s.add(i);
        i += 1;
    }
    d
}

#[no_mangle]
unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) < (s as usize) {
        memcpy(d, s, n)
    } else {
        let mut i = n;
        while i > 0 {
            i -= 1;
            *d.add(i) = *s.add(i);
        }
        d
    }
}

#[no_mangle]
unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        *d.add(i) = c as u8;
        i += 1;
    }
    d
}

#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = (*a.add(i), *b.add(i));
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    die(&[b"internal error"], 125)
}

/// The precompiled `core` names an unwinding personality; with `panic=abort` nothing unwinds.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
