# rawthread: all hand-written assembly (x86_64 Linux, System V ABI).
# Included by src/sys.rs with global_asm!, which reads Intel syntax.
#
# Why assembly at all: after a clone the child runs on a stack that has no
# frame yet, with the parent's registers copied. Compiled code would read its
# locals back from a stack it does not own, so the few instructions between
# the syscall and the first call into Rust must be written by hand.

    .text

# long rawthread_clone3(struct clone_args *args, size_t size,
#                       void (*entry)(void *), void *arg)
#
# Parent: returns the child's tid, or -errno.
# Child:  never returns; calls entry(arg) on the new stack.
    .globl  rawthread_clone3
    .hidden rawthread_clone3
    .type   rawthread_clone3, @function
    .p2align 4
rawthread_clone3:
    .cfi_startproc
    # r12 is callee-saved, so the parent keeps the caller's value; the child
    # inherits the register (syscall copies every register but rax, rcx, r11)
    # and finds `arg` there without touching the parent's stack.
    push    r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r12, 0
    mov     r12, rcx
    # r9 is not a clone3 argument, so it carries `entry` into the child.
    mov     r9, rdx
    mov     eax, 435                # __NR_clone3
    syscall
    test    rax, rax
    # rax == 0 only in the child, which is already on its own stack.
    jz      rawthread_thread_start
    pop     r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore r12
    ret
    .cfi_endproc
    .size   rawthread_clone3, .-rawthread_clone3

# long rawthread_clone(unsigned long flags, void *stack, pid_t *ptid,
#                      pid_t *ctid, unsigned long tls,
#                      void (*entry)(void *), void *arg)
#
# The legacy clone: same contract as rawthread_clone3. `arg` is the seventh
# argument and so arrives on the stack.
    .globl  rawthread_clone
    .hidden rawthread_clone
    .type   rawthread_clone, @function
    .p2align 4
rawthread_clone:
    .cfi_startproc
    push    r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r12, 0
    # [rsp] = saved r12, [rsp+8] = return address, [rsp+16] = arg.
    mov     r12, [rsp + 16]
    # The kernel's clone ABI on x86_64 is (flags, stack, ptid, ctid, tls):
    # the fourth syscall argument travels in r10, not rcx.
    mov     r10, rcx
    # entry is already in r9, which clone does not read.
    mov     eax, 56                 # __NR_clone
    syscall
    test    rax, rax
    jz      rawthread_thread_start
    pop     r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore r12
    ret
    .cfi_endproc
    .size   rawthread_clone, .-rawthread_clone

# The child's first frame: entered with rsp = the top of the new stack
# (16-byte aligned), r9 = entry, r12 = arg. It is a function of its own so
# that its unwind information can say "outermost frame".
    .type   rawthread_thread_start, @function
    .p2align 4
rawthread_thread_start:
    .cfi_startproc
    # No return address above this frame: unwinders and debuggers stop here
    # instead of walking into the TLS block above the stack.
    .cfi_undefined rip
    # A zero frame pointer ends frame-pointer walks (gdb, perf) the same way.
    xor     ebp, ebp
    mov     rdi, r12
    # The stack is 16-byte aligned here, so after the call pushes the return
    # address entry starts with the ABI's rsp % 16 == 8.
    call    r9
    # entry never returns (it ends with SYS_exit); trap loudly if it does.
    ud2
    .cfi_endproc
    .size   rawthread_thread_start, .-rawthread_thread_start

# void rawthread_unmap_and_exit(void *base, size_t len)
#
# The last act of a detached thread that frees its own region: it runs on
# the stack it unmaps, so from the munmap on it may touch no memory at all,
# only registers. Never returns.
    .globl  rawthread_unmap_and_exit
    .hidden rawthread_unmap_and_exit
    .type   rawthread_unmap_and_exit, @function
    .p2align 4
rawthread_unmap_and_exit:
    .cfi_startproc
    # Keep base and len in registers no syscall below reads or clobbers.
    mov     r8, rdi
    mov     r9, rsi
    # Block every signal: a handler run after the munmap would push its
    # frame onto unmapped memory (origin#125).
    mov     eax, 14                 # __NR_rt_sigprocmask
    xor     edi, edi                # SIG_BLOCK
    lea     rsi, [rip + rawthread_all_signals]
    xor     edx, edx                # no old mask wanted
    mov     r10d, 8                 # the kernel's sigset size
    syscall
    # Forget CLONE_CHILD_CLEARTID's address: at exit the kernel would write 0
    # into the tid word, in memory that another mapping may own by then.
    mov     eax, 218                # __NR_set_tid_address
    xor     edi, edi
    syscall
    mov     rdi, r8
    mov     rsi, r9
    mov     eax, 11                 # __NR_munmap
    syscall
    # The stack is gone; SYS_exit ends this thread only, and needs none.
    xor     edi, edi
    mov     eax, 60                 # __NR_exit
    syscall
    ud2
    .cfi_endproc
    .size   rawthread_unmap_and_exit, .-rawthread_unmap_and_exit

# u64 rawthread_running_on_valgrind(void)
# Valgrind's RUNNING_ON_VALGRIND client request (valgrind.h): non-zero when
# this code runs under valgrind, whose JIT recognises the magic sequence and
# answers in rdx. On a real CPU the sequence does nothing: the four
# rotations of rdi add up to 128 bits, and xchg of rbx with itself is a nop,
# so rdx keeps its default of 0. Valgrind replaces glibc's malloc by its own
# at the code level, which no symbol lookup shows.
    .text
    .globl  rawthread_running_on_valgrind
    .hidden rawthread_running_on_valgrind
    .type   rawthread_running_on_valgrind, @function
    .p2align 4
rawthread_running_on_valgrind:
    .cfi_startproc
    # The request block valgrind reads through rax: six words, the first
    # the request (VG_USERREQ__RUNNING_ON_VALGRIND), the rest its arguments.
    sub     rsp, 56
    .cfi_adjust_cfa_offset 56
    mov     qword ptr [rsp], 0x1001
    xor     eax, eax
    mov     [rsp + 8], rax
    mov     [rsp + 16], rax
    mov     [rsp + 24], rax
    mov     [rsp + 32], rax
    mov     [rsp + 40], rax
    mov     rax, rsp
    xor     edx, edx                # the answer if nobody answers
    rol     rdi, 3
    rol     rdi, 13
    rol     rdi, 61
    rol     rdi, 51
    xchg    rbx, rbx
    mov     rax, rdx
    add     rsp, 56
    .cfi_adjust_cfa_offset -56
    ret
    .cfi_endproc
    .size   rawthread_running_on_valgrind, .-rawthread_running_on_valgrind

    .section .rodata
    .p2align 3
rawthread_all_signals:
    .quad   -1
