//! The VMM's KVM plumbing (VM, irqchip, memory slots, port-I/O bus, vCPU threads, exit
//! reporting, vCPU kick at shutdown) checked with a few bytes of real-mode guest code.
//! This runs on any /dev/kvm, including this project's CI host whose kvm_pvm cannot boot
//! Linux; Linux boots are covered by the end-to-end tests in tests/kvmbox.

use kvm_ioctls::Kvm;
use std::io::Read;
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::serial::ConsoleOut;
use vmm::vm::Vm;
use vmm::ExitReason;

const CODE_ADDR: u64 = 0x1000;

/// Boots `cpus` vCPUs whose first one runs `code` in real mode at 0:0x1000.
fn run_real_mode(code: &[u8], cpus: u8, console: ConsoleOut) -> ExitReason {
    let kvm = Kvm::new().expect("open /dev/kvm (these tests need KVM)");
    let mut vm = Vm::new(kvm, 64).unwrap();
    vm.memory()
        .write_slice(code, GuestAddress(CODE_ADDR))
        .unwrap();
    vm.add_legacy_devices(console).unwrap();
    vm.create_vcpus(cpus, None).unwrap();
    let fd = vm.vcpu_fd(0).unwrap();
    let mut sregs = fd.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    fd.set_sregs(&sregs).unwrap();
    let mut regs = fd.get_regs().unwrap();
    regs.rip = CODE_ADDR;
    regs.rflags = 2;
    fd.set_regs(&regs).unwrap();
    vm.run().unwrap()
}

// mov dx, 0x3c0; mov al, 0x34 (SLP_TYP=5 | SLP_EN); out dx, al; hlt
const POWEROFF: [u8; 6] = [0xba, 0xc0, 0x03, 0xb0, 0x34, 0xee];

fn with_poweroff(prefix: &[u8]) -> Vec<u8> {
    let mut code = prefix.to_vec();
    code.extend_from_slice(&POWEROFF);
    code.push(0xf4);
    code
}

#[test]
fn acpi_s5_write_powers_off() {
    let r = run_real_mode(&with_poweroff(&[]), 1, ConsoleOut::new(None));
    assert_eq!(r, ExitReason::PowerOff);
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn i8042_reset_command_is_a_reset() {
    // mov al, 0xfe; out 0x64, al; hlt
    let r = run_real_mode(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4], 1, ConsoleOut::new(None));
    assert_eq!(r, ExitReason::Reset("i8042 reset command".into()));
    assert_ne!(r.exit_code(), 0);
}

#[test]
fn pvpanic_write_is_a_panic() {
    // mov dx, 0x505; in al, dx; out dx, al (the capability bit read back = PANICKED); hlt
    let r = run_real_mode(
        &[0xba, 0x05, 0x05, 0xec, 0xee, 0xf4],
        1,
        ConsoleOut::new(None),
    );
    assert_eq!(r, ExitReason::Panic);
}

#[test]
fn serial_output_reaches_the_console_file() {
    let path = std::env::temp_dir().join(format!("runv-plumbing-{}.log", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    // mov dx, 0x3f8; mov al, 'O'; out dx, al; mov al, 'K'; out dx, al; mov al, 10; out dx, al
    let code = with_poweroff(&[
        0xba, 0xf8, 0x03, 0xb0, b'O', 0xee, 0xb0, b'K', 0xee, 0xb0, b'\n', 0xee,
    ]);
    let r = run_real_mode(&code, 1, ConsoleOut::new(Some(Box::new(file))));
    assert_eq!(r, ExitReason::PowerOff);
    let mut out = String::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out, "OK\n");
}

#[test]
fn unhandled_ports_and_mmio_do_not_stop_the_vm() {
    // in al, 0x80; out 0x80, al; mov dx, 0xcf8; in eax, dx (66 ed); out dx, eax;
    // mmio: mov ax, 0xf000 -> no, stay in the low MiB: write to unbacked 0xa0000? It is RAM.
    let code = with_poweroff(&[
        0xe4, 0x80, 0xe6, 0x80, 0xba, 0xf8, 0x0c, 0x66, 0xed, 0x66, 0xef,
    ]);
    assert_eq!(
        run_real_mode(&code, 1, ConsoleOut::new(None)),
        ExitReason::PowerOff
    );
}

#[test]
fn idle_application_processors_are_stopped_at_exit() {
    // vCPU 1..3 wait for a SIPI inside KVM_RUN forever; the VMM must kick them out.
    let r = run_real_mode(&with_poweroff(&[]), 4, ConsoleOut::new(None));
    assert_eq!(r, ExitReason::PowerOff);
}
