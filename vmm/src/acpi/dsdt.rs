//! DSDT: the S5 sleep type for poweroff, the COM1 UART, the pvpanic device and the
//! virtio-mmio devices.

use super::{
    VirtioMmioAcpi, COM1_GSI, COM1_PORT, OEM_ID, OEM_REVISION, PVPANIC_PORT, S5_SLEEP_TYPE,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{aml, Aml};

/// DSDT revision 2: AML integers are 64-bit.
const DSDT_REVISION: u8 = 2;

/// The DSDT with its AML body:
///
/// ```text
/// Name (_S5, Package () { 5, 0, 0, 0 })    // SLP_TYPa = 5 for the sleep control register
/// Scope (\_SB) {
///     Device (COM1) {                        // 8250_pnp binds it and maps GSI 4
///         Name (_HID, EisaId ("PNP0501"))
///         Name (_UID, 0)
///         Name (_CRS, ResourceTemplate () {
///             IO (Decode16, 0x3f8, 0x3f8, 1, 8)
///             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 4 }
///         })
///     }
///     Device (PEVT) {                        // Linux pvpanic-mmio binds QEMU0001
///         Name (_HID, "QEMU0001")
///         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x505, 0x505, 1, 1) })
///     }
///     Device (V000) {                        // one per virtio-mmio device: V000, V001 ...
///         Name (_HID, "LNRO0005")            // Linux virtio_mmio's ACPI match
///         Name (_UID, 0)
///         Name (_CRS, ResourceTemplate () {
///             Memory32Fixed (ReadWrite, 0xd0000000, 0x1000)
///             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 5 }
///         })
///     }
/// }
/// ```
///
/// COM1 matters on a hardware-reduced platform: with the null legacy PIC there is no IRQ 4
/// for the legacy ttyS0 port, so the UART only gets a working interrupt through this device.
pub(super) fn build(virtio: &[VirtioMmioAcpi]) -> Vec<u8> {
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    );

    let com1_io = aml::IO::new(COM1_PORT, COM1_PORT, 1, 8);
    let com1_irq = aml::Interrupt::new(true, true, false, false, COM1_GSI);
    let com1_hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let com1_uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let com1_crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![&com1_io, &com1_irq]),
    );
    let com1 = aml::Device::new("COM1".into(), vec![&com1_hid, &com1_uid, &com1_crs]);

    let pvpanic_io = aml::IO::new(PVPANIC_PORT, PVPANIC_PORT, 1, 1);
    let pvpanic_hid = aml::Name::new("_HID".into(), &"QEMU0001");
    let pvpanic_crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![&pvpanic_io]),
    );
    let pvpanic = aml::Device::new("PEVT".into(), vec![&pvpanic_hid, &pvpanic_crs]);

    let virtio_devices: Vec<RawAml> = virtio.iter().enumerate().map(virtio_device).collect();
    let mut sb_children: Vec<&dyn Aml> = vec![&com1, &pvpanic];
    sb_children.extend(virtio_devices.iter().map(|d| d as &dyn Aml));
    let sb = aml::Scope::new("\\_SB_".into(), sb_children);

    let mut body = Vec::new();
    s5.to_aml_bytes(&mut body);
    sb.to_aml_bytes(&mut body);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        *b"RUNVDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// AML already serialized (acpi_tables' objects borrow their children).
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// `Device (Vnnn)` for virtio-mmio device `index`.
fn virtio_device((index, dev): (usize, &VirtioMmioAcpi)) -> RawAml {
    let hid = aml::Name::new("_HID".into(), &"LNRO0005");
    let uid = aml::Name::new("_UID".into(), &(index as u32));
    let mem = aml::Memory32Fixed::new(true, dev.base, dev.len);
    let irq = aml::Interrupt::new(true, true, false, false, dev.gsi);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&mem, &irq]));
    let device = aml::Device::new(
        format!("V{:03X}", index % 0x1000).as_str().into(),
        vec![&hid, &uid, &crs],
    );
    let mut bytes = Vec::new();
    device.to_aml_bytes(&mut bytes);
    RawAml(bytes)
}
