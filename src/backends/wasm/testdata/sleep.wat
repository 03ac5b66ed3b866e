;; sleep: says so on stdout, sleeps argv[1] seconds (default 3600) with one poll_oneoff on the
;; monotonic clock, as `sleep(3)` in C compiles to, then says "woke" and exits 0. An idle module.
;; Memory: 0-15 scratch, 16-63 text, 64-111 the subscription, 128-159 the event,
;; 1024-2047 argv pointers, 4096-32767 argv strings.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "sleeping\n")
  (data (i32.const 32) "woke\n")

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; The value of a string of decimal digits, or $default if it holds anything else.
  (func $parse_seconds (param $s i32) (param $default i32) (result i32) (local $value i32) (local $c i32)
    (if (i32.eqz (i32.load8_u (local.get $s))) (then (return (local.get $default))))
    (block $done
      (loop $next
        (local.set $c (i32.load8_u (local.get $s)))
        (br_if $done (i32.eqz (local.get $c)))
        (if (i32.or (i32.lt_u (local.get $c) (i32.const 48)) (i32.gt_u (local.get $c) (i32.const 57)))
          (then (return (local.get $default))))
        (local.set $value (i32.add (i32.mul (local.get $value) (i32.const 10)) (i32.sub (local.get $c) (i32.const 48))))
        (local.set $s (i32.add (local.get $s) (i32.const 1)))
        (br $next)))
    (local.get $value))

  (func (export "_start") (local $seconds i32)
    (local.set $seconds (i32.const 3600))
    (drop (call $args_sizes_get (i32.const 12) (i32.const 8)))
    (if (i32.and (i32.ge_u (i32.load (i32.const 12)) (i32.const 2))
                 (i32.and (i32.le_u (i32.load (i32.const 12)) (i32.const 256)) (i32.le_u (i32.load (i32.const 8)) (i32.const 28672))))
      (then
        (drop (call $args_get (i32.const 1024) (i32.const 4096)))
        (local.set $seconds (call $parse_seconds (i32.load (i32.const 1028)) (i32.const 3600)))))
    (call $write (i32.const 16) (i32.const 9))
    ;; One relative clock subscription: userdata 0, tag 0 (clock), id 1 (monotonic), timeout in ns.
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.mul (i64.extend_i32_u (local.get $seconds)) (i64.const 1000000000)))
    (drop (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 12)))
    (call $write (i32.const 32) (i32.const 5))
    (call $proc_exit (i32.const 0))))
