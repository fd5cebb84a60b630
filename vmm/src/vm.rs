//! A KVM micro-VM: guest memory, in-kernel irqchip, legacy devices, vCPU threads, and the
//! wait for the guest to end it.

use crate::acpi;
use crate::boot;
use crate::config::{Console, VmConfig};
use crate::cpu::{self, cpuid::CpuTopology, vcpu::Vcpu, vcpu::VcpuEvent};
use crate::devices::virtio::mmio::{self, MmioTransport, MMIO_WINDOW, QUEUE_NOTIFY};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::devices::{self, i8042::I8042, power, serial, Buses};
use crate::event_loop::{self, EventLoop};
use crate::exit::{ExitReason, ExitSender};
use crate::memory::{self, GuestRam};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{Address, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

/// Three pages KVM needs for the real-mode TSS on Intel, inside the MMIO gap.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// KVM_PIT_SPEAKER_DUMMY: the PIT's speaker port is emulated as a dummy.
const KVM_PIT_SPEAKER_DUMMY: u32 = 1;
/// GSI of the first virtio-mmio device; each further device takes the next one. GSIs 0-4
/// are the legacy PC's (4 = COM1).
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// Last GSI a virtio-mmio device may take: the I/O APIC has 24 pins.
pub const VIRTIO_LAST_GSI: u32 = 23;
/// How long the VMM waits for the vCPU threads to end after kicking them.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors creating or running a VM, each naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A KVM ioctl on the system or VM fd failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The call.
        what: &'static str,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// The host KVM lacks a capability the VMM needs.
    #[error("the host KVM lacks {0}, which runv-vmm needs")]
    MissingCap(&'static str),
    /// The host cannot run the guest at all.
    #[error(transparent)]
    Host(#[from] crate::host::Error),
    /// Configuration.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::Error),
    /// Loading the kernel, initramfs or boot parameters.
    #[error(transparent)]
    Boot(#[from] boot::Error),
    /// ACPI tables.
    #[error(transparent)]
    Acpi(#[from] acpi::Error),
    /// vCPU configuration.
    #[error(transparent)]
    Cpu(#[from] cpu::Error),
    /// The vCPU kick signal.
    #[error(transparent)]
    Kick(#[from] cpu::kick::Error),
    /// Device set-up.
    #[error(transparent)]
    Device(#[from] devices::Error),
    /// virtio-mmio transport set-up.
    #[error(transparent)]
    Virtio(#[from] mmio::Error),
    /// The device event loop.
    #[error(transparent)]
    EventLoop(#[from] event_loop::Error),
    /// A virtio-blk image.
    #[error(transparent)]
    Block(#[from] crate::devices::virtio::block::Error),
    /// A virtio-fs share.
    #[error(transparent)]
    Fs(#[from] crate::devices::virtio::fs::Error),
    /// The vsock device.
    #[error(transparent)]
    Vsock(#[from] crate::devices::virtio::vsock::device::Error),
    /// A virtio-net device.
    #[error(transparent)]
    Net(#[from] crate::devices::virtio::net::Error),
    /// No GSI left for another virtio-mmio device.
    #[error("cannot add virtio device {0}: all {n} virtio-mmio interrupts (GSI {VIRTIO_FIRST_GSI}-{VIRTIO_LAST_GSI}) are taken", n = VIRTIO_LAST_GSI - VIRTIO_FIRST_GSI + 1)]
    TooManyDevices(String),
    /// Console or eventfd I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, Error>;

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { what, source }
}

/// A VM being built, then run.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    bus: Buses,
    event_loop: Option<EventLoop>,
    virtio: Vec<acpi::VirtioMmioAcpi>,
    serial: Option<Arc<Mutex<serial::SerialDevice>>>,
    vcpus: Vec<VcpuFd>,
    exit_tx: ExitSender,
    exit_rx: Receiver<ExitReason>,
    /// Last, so it is dropped after everything that may hold a copy of the memory.
    mem: GuestRam,
}

impl Vm {
    /// Creates the VM with `mem_mib` MiB of RAM, the in-kernel irqchip and PIT.
    pub fn new(kvm: Kvm, mem_mib: u64) -> Result<Self> {
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
            (Cap::Pit2, "KVM_CAP_PIT2"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::MissingCap(name));
            }
        }
        let mem = memory::create_guest_memory(mem_mib)?;
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        fd.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("KVM_CREATE_PIT2"))?;
        for (slot, region) in mem.iter().enumerate() {
            let host_addr = mem
                .get_host_address(region.start_addr())
                .map_err(|e| Error::Io {
                    what: format!("guest RAM at {:#x}", region.start_addr().raw_value()),
                    source: std::io::Error::other(e.to_string()),
                })?;
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host_addr as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the Vm keeps
            // for as long as the VM fd (and so every vCPU) exists.
            unsafe { fd.set_user_memory_region(region) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        let (exit_tx, exit_rx) = mpsc::channel();
        Ok(Vm {
            kvm,
            fd,
            mem,
            bus: Buses::default(),
            event_loop: None,
            virtio: Vec::new(),
            serial: None,
            vcpus: Vec::new(),
            exit_tx,
            exit_rx,
        })
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Adds COM1, the i8042 (reset), the ACPI power register and pvpanic.
    pub fn add_legacy_devices(&mut self, console: serial::ConsoleOut) -> Result<()> {
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| Error::Io {
            what: "eventfd for the serial interrupt".into(),
            source,
        })?;
        self.fd
            .register_irqfd(&irq, serial::COM1_GSI)
            .map_err(kvm_err("KVM_IRQFD (serial)"))?;
        let uart = Arc::new(Mutex::new(serial::SerialDevice::new(irq, console)));
        self.bus
            .pio
            .insert(serial::COM1_PORT, serial::COM1_LEN, uart.clone())?;
        self.serial = Some(uart);
        let tx = self.exit_tx.clone();
        self.bus.pio.insert(
            devices::i8042::I8042_PORT,
            devices::i8042::I8042_LEN,
            Arc::new(Mutex::new(I8042::new(tx))),
        )?;
        let tx = self.exit_tx.clone();
        self.bus.pio.insert(
            acpi::SLEEP_CONTROL_PORT,
            1,
            Arc::new(Mutex::new(power::AcpiPowerRegister::new(tx))),
        )?;
        let tx = self.exit_tx.clone();
        self.bus.pio.insert(
            acpi::PVPANIC_PORT,
            1,
            Arc::new(Mutex::new(power::PvPanic::new(tx))),
        )?;
        Ok(())
    }

    /// Adds a virtio device (called `name` in logs) on virtio-mmio: the next 4 KiB window
    /// from [`memory::MMIO_DEVICES_START`], the next GSI from [`VIRTIO_FIRST_GSI`] through an
    /// irqfd, and one ioeventfd per queue on QueueNotify (datamatch = queue index), so
    /// neither interrupts nor notifications go through a vCPU exit. Starts the device event
    /// loop on first use. Returns what the DSDT must declare.
    pub fn add_virtio_device(
        &mut self,
        name: &str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<acpi::VirtioMmioAcpi> {
        let index = self.virtio.len() as u32;
        let gsi = VIRTIO_FIRST_GSI + index;
        if gsi > VIRTIO_LAST_GSI {
            return Err(Error::TooManyDevices(name.to_string()));
        }
        let base = memory::MMIO_DEVICES_START + u64::from(index) * MMIO_WINDOW;
        let event_loop = match &self.event_loop {
            Some(el) => el.handle(),
            None => self.event_loop.insert(EventLoop::start()?).handle(),
        };
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| Error::Io {
            what: format!("eventfd for the interrupt of {name}"),
            source,
        })?;
        self.fd
            .register_irqfd(&irqfd, gsi)
            .map_err(kvm_err("KVM_IRQFD (virtio-mmio)"))?;
        let transport = MmioTransport::new(
            name.to_string(),
            device,
            self.mem.clone(),
            Arc::new(Interrupt::new(irqfd)),
            event_loop,
        )?;
        let notify = IoEventAddress::Mmio(base + QUEUE_NOTIFY);
        for (queue, evt) in transport.queue_evts().iter().enumerate() {
            self.fd
                .register_ioevent(evt, &notify, queue as u32)
                .map_err(kvm_err("KVM_IOEVENTFD (virtio-mmio QueueNotify)"))?;
        }
        self.bus
            .mmio
            .insert(base, MMIO_WINDOW, Arc::new(Mutex::new(transport)))?;
        let info = acpi::VirtioMmioAcpi {
            base: base as u32,
            len: MMIO_WINDOW as u32,
            gsi,
        };
        tracing::info!("{name}: virtio-mmio at {base:#x}, GSI {gsi}");
        self.virtio.push(info);
        Ok(info)
    }

    /// The virtio-mmio devices added so far, for the DSDT.
    pub fn virtio_devices(&self) -> &[acpi::VirtioMmioAcpi] {
        &self.virtio
    }

    /// Creates and configures `count` vCPUs; the first one starts at the 64-bit `entry`
    /// when given (otherwise its registers are left to the caller).
    pub fn create_vcpus(&mut self, count: u8, entry: Option<u64>) -> Result<()> {
        let supported: CpuId = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let tsc_deadline = self.kvm.check_extension(Cap::TscDeadlineTimer);
        for id in 0..count {
            let fd = self
                .fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let topo = CpuTopology {
                id,
                count,
                tsc_deadline,
            };
            cpu::configure_vcpu(&fd, &supported, topo, &*self.mem, entry.filter(|_| id == 0))?;
            self.vcpus.push(fd);
        }
        Ok(())
    }

    /// vCPU `id`'s fd, to adjust its registers before [`Vm::run`].
    pub fn vcpu_fd(&self, id: usize) -> Option<&VcpuFd> {
        self.vcpus.get(id)
    }

    /// Starts every vCPU and waits until the guest (or an error) ends the VM.
    pub fn run(self) -> Result<ExitReason> {
        cpu::kick::install_handler()?;
        let bus = Arc::new(self.bus);
        let (done_tx, done_rx) = mpsc::channel();
        let mut threads = Vec::new();
        for (id, fd) in self.vcpus.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let vcpu = Vcpu::new(id as u8, fd, bus.clone(), self.exit_tx.clone());
            let done = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    crate::seccomp::apply_or_exit(crate::seccomp::Thread::Vcpu);
                    vcpu.run(rx);
                    let _ = done.send(id);
                })
                .map_err(|source| Error::Io {
                    what: format!("spawning the thread of vCPU {id}"),
                    source,
                })?;
            threads.push(VcpuThread { events: tx, handle });
        }
        for t in &threads {
            let _ = t.events.send(VcpuEvent::Start);
        }
        // Every thread is started: the main thread only waits and stops them from here.
        crate::seccomp::apply_or_exit(crate::seccomp::Thread::Main);
        // The Vm keeps a sender, so this returns only when something reports an end.
        let reason = self
            .exit_rx
            .recv()
            .unwrap_or_else(|_| ExitReason::Error("every vCPU and device went away".into()));
        stop_vcpus(threads, &done_rx);
        // No vCPU touches a device any more: end device work, then drop the devices.
        if let Some(event_loop) = self.event_loop {
            event_loop.stop();
        }
        drop(bus);
        if let Some(uart) = &self.serial {
            let mut uart = uart.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = uart.flush() {
                tracing::warn!("flushing the console: {e}");
            }
        }
        Ok(reason)
    }
}

/// A running vCPU thread: its event channel and its handle.
struct VcpuThread {
    events: Sender<VcpuEvent>,
    handle: JoinHandle<()>,
}

/// Tells every vCPU to stop, kicks each out of KVM_RUN with one signal (it sets the
/// vCPU's `immediate_exit`, so a signal that lands just before KVM_RUN is not lost), and
/// joins the threads as `done` reports them ended, waiting at most [`VCPU_STOP_TIMEOUT`].
fn stop_vcpus(threads: Vec<VcpuThread>, done: &Receiver<usize>) {
    for (id, t) in threads.iter().enumerate() {
        // Stop first: the kicked thread looks at its channel when KVM_RUN returns.
        let _ = t.events.send(VcpuEvent::Stop);
        if !t.handle.is_finished() {
            if let Err(e) = t.handle.kill(cpu::kick::kick_signal()) {
                tracing::warn!("kicking vCPU {id}: {e}");
            }
        }
    }
    let mut handles: Vec<Option<JoinHandle<()>>> =
        threads.into_iter().map(|t| Some(t.handle)).collect();
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    let mut left = handles.len();
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(id) = done.recv_timeout(wait) else {
            break;
        };
        if let Some(handle) = handles.get_mut(id).and_then(Option::take) {
            let _ = handle.join();
            left -= 1;
        }
    }
    for (id, _) in handles.iter().enumerate().filter(|(_, h)| h.is_some()) {
        tracing::warn!("vCPU {id} did not stop within {VCPU_STOP_TIMEOUT:?} of its kick");
    }
}

fn console_out(console: &Console, limit: Option<u64>) -> Result<serial::ConsoleOut> {
    let inner: Option<Box<dyn Write + Send>> = match console {
        Console::Stdout => Some(Box::new(std::io::stdout())),
        Console::Off => None,
        Console::File(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| Error::Io {
                    what: format!("opening console file {}", path.display()),
                    source,
                })?,
        )),
    };
    Ok(serial::ConsoleOut::new(inner).with_limit(limit))
}

/// Adds the virtio devices of `config`.
fn add_virtio_devices(vm: &mut Vm, config: &VmConfig) -> Result<()> {
    for image in &config.block {
        let device = crate::devices::virtio::block::Block::new(image)?;
        let name = device.name().to_string();
        vm.add_virtio_device(&name, Box::new(device))?;
    }
    for share in &config.fs {
        let device = crate::devices::virtio::fs::Fs::new(share)?;
        vm.add_virtio_device(&format!("virtio-fs {}", share.tag), Box::new(device))?;
    }
    if let Some(vsock) = &config.vsock {
        // Dropping the device (when the VM ends, or on an error here) removes the socket.
        let device = crate::devices::virtio::vsock::VsockDevice::new(vsock.cid, &vsock.uds)?;
        let name = format!("virtio-vsock cid {}", vsock.cid);
        vm.add_virtio_device(&name, Box::new(device))?;
    }
    for nic in &config.net {
        let device = crate::devices::virtio::net::Net::new(nic)?;
        let name = device.name().to_string();
        vm.add_virtio_device(&name, Box::new(device))?;
    }
    Ok(())
}

/// Boots the VM `config` describes and runs it to its end.
pub fn run(config: &VmConfig) -> Result<ExitReason> {
    config.validate()?;
    crate::host::check_kvm_backend(std::path::Path::new(crate::host::SYS_MODULE))?;
    let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
    let mut vm = Vm::new(kvm, config.memory_mib)?;
    let kernel = boot::load_kernel(vm.memory(), &config.kernel)?;
    let initrd = config
        .initrd
        .as_deref()
        .map(|path| boot::load_initrd(vm.memory(), path, kernel.kernel_end))
        .transpose()?;
    let cmdline = boot::build_cmdline(config.cmdline.as_deref(), &[])?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .map_err(|e| boot::Error::Cmdline {
            cmdline: config.cmdline.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?;
    add_virtio_devices(&mut vm, config)?;
    let rsdp = acpi::create_acpi_tables(vm.memory(), config.cpus, vm.virtio_devices())?;
    let params = boot::build_boot_params(
        kernel.setup_header,
        cmdline_len,
        initrd,
        config.memory_mib << 20,
        Some(rsdp),
    )?;
    boot::write_boot_params(vm.memory(), &params, &cmdline)?;
    vm.add_legacy_devices(console_out(&config.console, config.console_limit)?)?;
    vm.create_vcpus(config.cpus, Some(kernel.entry.raw_value()))?;
    vm.run()
}
