//! CPUID filtering: start from what KVM supports and describe the VM's real topology
//! (one socket, one thread per core, `count` cores) and the hypervisor to the guest.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: TSC-deadline LAPIC timer.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 EDX: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 6 ECX: energy performance bias MSR (not emulated).
const LEAF6_ECX_EPB: u32 = 1 << 3;
/// Leaf 0xB/0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Where the vCPU sits in the VM and what the host KVM offers.
#[derive(Debug, Clone, Copy)]
pub struct CpuTopology {
    /// This vCPU's index, which is also its APIC id.
    pub id: u8,
    /// vCPUs in the VM.
    pub count: u8,
    /// KVM can emulate the TSC-deadline timer with its in-kernel LAPIC.
    pub tsc_deadline: bool,
}

/// Number of APIC-id bits needed to number `count` cores.
fn id_bits(count: u8) -> u32 {
    (count.max(1) as u32).next_power_of_two().trailing_zeros()
}

/// Rewrites KVM's supported CPUID in place for the vCPU `topo` describes.
pub fn filter_cpuid(cpuid: &mut CpuId, topo: CpuTopology) {
    for entry in cpuid.as_mut_slice() {
        filter_entry(entry, topo);
    }
}

fn filter_entry(e: &mut kvm_cpuid_entry2, topo: CpuTopology) {
    let id = topo.id as u32;
    let count = topo.count.max(1) as u32;
    match e.function {
        0x1 => {
            // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package.
            e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | (count << 16);
            e.ecx |= LEAF1_ECX_HYPERVISOR;
            if topo.tsc_deadline {
                e.ecx |= LEAF1_ECX_TSC_DEADLINE;
            } else {
                e.ecx &= !LEAF1_ECX_TSC_DEADLINE;
            }
            if count > 1 {
                e.edx |= LEAF1_EDX_HTT;
            } else {
                e.edx &= !LEAF1_EDX_HTT;
            }
        }
        0x4 => {
            // Deterministic cache parameters (Intel): EAX[31:26] cores per package - 1,
            // EAX[25:14] logical processors sharing this cache - 1 (L3 is shared by all).
            let level = (e.eax >> 5) & 0x7;
            let sharing = if level >= 3 { count - 1 } else { 0 };
            e.eax = (e.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
        }
        0x6 => e.ecx &= !LEAF6_ECX_EPB,
        0xa => {
            // No virtual PMU: the guest must not probe performance counters.
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        0xb | 0x1f => {
            e.edx = id;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                }
                1 => {
                    e.eax = id_bits(topo.count);
                    e.ebx = count;
                    e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
            }
        }
        0x8000_0002..=0x8000_0005 => {
            // The processor brand string and the L1 cache/TLB leaf: KVM reports them as
            // zero and leaves them to the VMM; give the host's, as QEMU's `-cpu host`
            // does, so the guest's /proc/cpuinfo names its model.
            let host = host_cpuid(e.function);
            (e.eax, e.ebx, e.ecx, e.edx) = (host.eax, host.ebx, host.ecx, host.edx);
        }
        0x8000_0008 => {
            // AMD: ECX[15:12] APIC-id bits for cores, ECX[7:0] cores per package - 1.
            e.ecx = (e.ecx & !0xf0ff) | (id_bits(topo.count) << 12) | (count - 1);
        }
        0x8000_001e => {
            // AMD extended APIC id, one thread per core, one node.
            e.eax = id;
            e.ebx = id & 0xff;
            e.ecx = 0;
        }
        _ => {}
    }
}

/// The host processor's CPUID leaf `function` (subleaf 0).
fn host_cpuid(function: u32) -> std::arch::x86_64::CpuidResult {
    // Only extended leaves KVM listed (so the host has them) are asked for.
    std::arch::x86_64::__cpuid(function)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn filtered(entries: &[kvm_cpuid_entry2], id: u8, count: u8) -> CpuId {
        let mut c = CpuId::from_entries(entries).unwrap();
        filter_cpuid(
            &mut c,
            CpuTopology {
                id,
                count,
                tsc_deadline: false,
            },
        );
        c
    }

    fn find(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn leaf1_names_apic_id_count_and_hypervisor() {
        let c = filtered(&[entry(1, 0)], 3, 4);
        let e = find(&c, 1, 0);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xffff, 0xffff);
        assert_ne!(e.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(e.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_ne!(e.edx & LEAF1_EDX_HTT, 0);
        let single = find(&filtered(&[entry(1, 0)], 0, 1), 1, 0);
        assert_eq!(single.edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_has_one_thread_per_core() {
        let c = filtered(&[entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)], 2, 3);
        let smt = find(&c, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 3, 2, 2));
        let end = find(&c, 0xb, 2);
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
    }

    #[test]
    fn cache_leaf_reports_cores_and_l3_sharing() {
        let mut l1 = entry(4, 0);
        l1.eax = 1 << 5 | 1; // level 1, data cache
        let mut l3 = entry(4, 3);
        l3.eax = 3 << 5 | 3;
        let c = filtered(&[l1, l3], 0, 2);
        let e1 = find(&c, 4, 0);
        assert_eq!(e1.eax >> 26, 1);
        assert_eq!((e1.eax >> 14) & 0xfff, 0);
        assert_eq!(e1.eax & 0x3fff, 1 << 5 | 1);
        assert_eq!((find(&c, 4, 3).eax >> 14) & 0xfff, 1);
    }

    #[test]
    fn brand_string_is_the_hosts() {
        let zero = |f| kvm_cpuid_entry2 {
            function: f,
            ..Default::default()
        };
        let c = filtered(
            &[zero(0x8000_0002), zero(0x8000_0003), zero(0x8000_0004)],
            0,
            1,
        );
        let mut guest = Vec::new();
        let mut host = Vec::new();
        for f in 0x8000_0002..=0x8000_0004 {
            let e = find(&c, f, 0);
            let h = host_cpuid(f);
            for r in [e.eax, e.ebx, e.ecx, e.edx] {
                guest.extend(r.to_le_bytes());
            }
            for r in [h.eax, h.ebx, h.ecx, h.edx] {
                host.extend(r.to_le_bytes());
            }
        }
        assert_eq!(guest, host);
        let brand = String::from_utf8_lossy(&guest);
        assert!(!brand.trim_matches(['\0', ' ']).is_empty(), "{brand:?}");
    }

    #[test]
    fn amd_leaves_name_core_count_and_ids() {
        let c = filtered(&[entry(0x8000_0008, 0), entry(0x8000_001e, 0)], 5, 8);
        let e = find(&c, 0x8000_0008, 0);
        assert_eq!(e.ecx & 0xff, 7);
        assert_eq!((e.ecx >> 12) & 0xf, 3);
        assert_eq!(find(&c, 0x8000_001e, 0).eax, 5);
    }

    #[test]
    fn pmu_is_hidden_and_tsc_deadline_follows_kvm() {
        let mut c = CpuId::from_entries(&[entry(0xa, 0), entry(1, 0)]).unwrap();
        filter_cpuid(
            &mut c,
            CpuTopology {
                id: 0,
                count: 1,
                tsc_deadline: true,
            },
        );
        let pmu = find(&c, 0xa, 0);
        assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0));
        assert_ne!(find(&c, 1, 0).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn hypervisor_leaves_pass_through() {
        let mut kvm = entry(0x4000_0000, 0);
        kvm.ebx = u32::from_le_bytes(*b"KVMK");
        let c = filtered(&[kvm], 0, 1);
        assert_eq!(find(&c, 0x4000_0000, 0).ebx, kvm.ebx);
    }
}
