//! The VMM's KVM plumbing (VM, irqchip, memory slots, port-I/O bus, vCPU threads, exit
//! reporting, vCPU kick at shutdown) checked with a few bytes of real-mode guest code.
//! This runs on any /dev/kvm, including this project's CI host whose kvm_pvm cannot boot
//! Linux; Linux boots are covered by the end-to-end tests in tests/kvmbox.

mod common;

use common::{kvm_vm, real_mode};
use runv_vmm::devices::serial::ConsoleOut;
use runv_vmm::ExitReason;
use std::io::Read;
use vm_memory::{Bytes, GuestAddress};

const CODE_ADDR: u64 = 0x1000;

/// Boots `cpus` vCPUs whose first one runs `code` in real mode at 0:0x1000.
fn run_real_mode(code: &[u8], cpus: u8, console: ConsoleOut) -> ExitReason {
    let mut vm = kvm_vm(64);
    vm.memory()
        .write_slice(code, GuestAddress(CODE_ADDR))
        .unwrap();
    vm.add_legacy_devices(console).unwrap();
    vm.create_vcpus(cpus, None).unwrap();
    real_mode(vm.vcpu_fd(0).unwrap(), CODE_ADDR);
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
#[ignore = "needs /dev/kvm: a real-mode guest writes the ACPI sleep register"]
fn kvm_acpi_s5_write_powers_off() {
    let r = run_real_mode(&with_poweroff(&[]), 1, ConsoleOut::new(None));
    assert_eq!(r, ExitReason::PowerOff);
    assert_eq!(r.exit_code(), 0);
}

#[test]
#[ignore = "needs /dev/kvm: a real-mode guest resets through the i8042"]
fn kvm_i8042_reset_command_is_a_reset() {
    // mov al, 0xfe; out 0x64, al; hlt
    let r = run_real_mode(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4], 1, ConsoleOut::new(None));
    assert_eq!(r, ExitReason::Reset("i8042 reset command".into()));
    assert_ne!(r.exit_code(), 0);
}

#[test]
#[ignore = "needs /dev/kvm: a real-mode guest reports a panic through pvpanic"]
fn kvm_pvpanic_write_is_a_panic() {
    // mov dx, 0x505; in al, dx; out dx, al (the capability bit read back = PANICKED); hlt
    let r = run_real_mode(
        &[0xba, 0x05, 0x05, 0xec, 0xee, 0xf4],
        1,
        ConsoleOut::new(None),
    );
    assert_eq!(r, ExitReason::Panic);
}

#[test]
#[ignore = "needs /dev/kvm: a real-mode guest writes to COM1"]
fn kvm_serial_output_reaches_the_console_file() {
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
#[ignore = "needs /dev/kvm: a real-mode guest touches ports no device claims"]
fn kvm_unhandled_ports_and_mmio_do_not_stop_the_vm() {
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
#[ignore = "needs /dev/kvm: three vCPUs wait for a SIPI inside KVM_RUN"]
fn kvm_idle_application_processors_are_stopped_at_exit() {
    // vCPU 1..3 wait for a SIPI inside KVM_RUN forever; the VMM must kick them out.
    let r = run_real_mode(&with_poweroff(&[]), 4, ConsoleOut::new(None));
    assert_eq!(r, ExitReason::PowerOff);
}

#[test]
#[ignore = "needs /dev/kvm: a vCPU spins in the guest until kicked"]
fn kvm_a_vcpu_spinning_in_the_guest_is_stopped_by_its_kick() {
    // vCPU 1 (started by hand, no SIPI): mov byte [0x3000], 1; jmp $ - it never exits.
    const SPIN_ADDR: u64 = 0x2000;
    let spin = [0xc6, 0x06, 0x00, 0x30, 0x01, 0xeb, 0xfe];
    // vCPU 0: wait until vCPU 1 spins (cmp byte [0x3000], 1; jne back), then power off.
    let boot = with_poweroff(&[0x80, 0x3e, 0x00, 0x30, 0x01, 0x75, 0xf9]);
    let mut vm = kvm_vm(64);
    vm.memory()
        .write_slice(&boot, GuestAddress(CODE_ADDR))
        .unwrap();
    vm.memory()
        .write_slice(&spin, GuestAddress(SPIN_ADDR))
        .unwrap();
    vm.add_legacy_devices(ConsoleOut::new(None)).unwrap();
    vm.create_vcpus(2, None).unwrap();
    real_mode(vm.vcpu_fd(0).unwrap(), CODE_ADDR);
    let ap = vm.vcpu_fd(1).unwrap();
    real_mode(ap, SPIN_ADDR);
    ap.set_mp_state(kvm_bindings::kvm_mp_state {
        mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
    })
    .unwrap();
    let start = std::time::Instant::now();
    assert_eq!(vm.run().unwrap(), ExitReason::PowerOff);
    // One kick ends the spinning vCPU at once; the VMM gives up on a vCPU only after 2 s.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(1),
        "stopping took {:?}",
        start.elapsed()
    );
}
