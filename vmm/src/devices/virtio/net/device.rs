//! The virtio-net device: features, configuration space, activation and reset. The
//! queues are served by [`NetHandler`] on the event loop.

use super::handler::{NetHandler, NetQueues, NetStats, RX_QUEUE, TX_QUEUE};
use super::tap::{NetBackend, Tap};
use super::{Error, MacAddr, NetConfig};
use crate::devices::virtio::common::{Device, DeviceCommon, DeviceKind};
use crate::devices::virtio::{ActivateArgs, ActivateError, QueueT, TYPE_NET};
use std::sync::Arc;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Queue sizes: rx, tx. 256 as Firecracker and Cloud Hypervisor use.
const QUEUE_SIZES: [u16; 2] = [256, 256];
/// `struct virtio_net_config` up to `mtu`: mac[6], status, max_virtqueue_pairs, mtu
/// (all little-endian with VERSION_1).
const CONFIG_LEN: usize = 12;
const CFG_STATUS: usize = 6;
const CFG_MAX_VQ_PAIRS: usize = 8;
const CFG_MTU: usize = 10;

/// The offloads the tap may hand the guest (TUNSETOFFLOAD) for the features it accepted:
/// partial checksums with GUEST_CSUM, TSO with GUEST_TSO4/6. TSO needs GUEST_CSUM (virtio
/// 1.2, 5.1.3.1; the tap refuses TSO without TUN_F_CSUM too), so a driver that takes TSO
/// alone gets none.
pub fn tun_offload_flags(acked: u64) -> libc::c_uint {
    let has = |bit: u32| acked & (1u64 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

/// A virtio-net device on a tap (or, in tests, another frame fd).
pub type Net = Device<NetKind>;

/// What is virtio-net's own in a [`Net`].
pub struct NetKind {
    backend: Box<dyn NetBackend>,
    features: u64,
    stats: Arc<NetStats>,
}

impl Net {
    /// Takes over the tap of `cfg` (see [`Tap::from_inherited_fd`]).
    pub fn new(cfg: &NetConfig) -> Result<Self, Error> {
        let tap = Tap::from_inherited_fd(cfg.fd)?;
        let name = format!("virtio-net {} ({})", cfg.mac, tap.name());
        Ok(Self::with_backend(name, Box::new(tap), cfg.mac, cfg.mtu))
    }

    /// A device on any backend, called `name` in logs; offers VIRTIO_NET_F_MTU only with
    /// `mtu`.
    pub fn with_backend(
        name: String,
        backend: Box<dyn NetBackend>,
        mac: MacAddr,
        mtu: Option<u16>,
    ) -> Self {
        let mut features = [
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_F_VERSION_1,
        ]
        .iter()
        .fold(0u64, |f, &bit| f | (1u64 << bit));
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac.0);
        config[CFG_STATUS..CFG_STATUS + 2]
            .copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[CFG_MAX_VQ_PAIRS..CFG_MAX_VQ_PAIRS + 2].copy_from_slice(&1u16.to_le_bytes());
        if let Some(mtu) = mtu {
            features |= 1u64 << VIRTIO_NET_F_MTU;
            config[CFG_MTU..CFG_MTU + 2].copy_from_slice(&mtu.to_le_bytes());
        }
        let kind = NetKind {
            backend,
            features,
            stats: Arc::new(NetStats::default()),
        };
        Device::from_parts(name, &config, kind)
    }

    /// The device's counters.
    pub fn stats(&self) -> Arc<NetStats> {
        self.kind.stats.clone()
    }
}

impl DeviceKind for NetKind {
    const DEVICE_TYPE: u32 = TYPE_NET;
    const QUEUE_MAX_SIZES: &'static [u16] = &QUEUE_SIZES;

    fn features(&self) -> u64 {
        self.features
    }

    fn activate(
        &mut self,
        common: &mut DeviceCommon,
        args: ActivateArgs,
    ) -> Result<(), ActivateError> {
        common.check_inactive()?;
        common.check_queue_count(&args, QUEUE_SIZES.len())?;
        if !args.queues.iter().all(|q| q.ready()) {
            return Err(common.invalid("the rx and tx queues must both be ready"));
        }
        let acked = common.acked_features();
        let offload = tun_offload_flags(acked);
        self.backend
            .set_offload(offload)
            .map_err(|source| common.io_error(format!("TUNSETOFFLOAD {offload:#x}"), source))?;
        let mut queues = args.queues;
        let mut evts = args.queue_evts;
        let tx = queues.swap_remove(TX_QUEUE);
        let rx = queues.swap_remove(RX_QUEUE);
        let tx_evt = evts.swap_remove(TX_QUEUE);
        let rx_evt = evts.swap_remove(RX_QUEUE);
        let handler = NetHandler::new(
            common.name().to_string(),
            args.mem,
            NetQueues {
                rx,
                tx,
                rx_evt,
                tx_evt,
            },
            self.backend.frames(),
            args.interrupt,
            acked & (1u64 << VIRTIO_NET_F_MRG_RXBUF) != 0,
            self.stats.clone(),
        );
        let fds = handler.initial_fds();
        common.register(args.event_loop, Box::new(handler), &fds)
    }

    fn reset(&mut self, common: &mut DeviceCommon, acked_features: u64) {
        // The handler (queues, memory, a frame it held) is gone: turn the tap's offloads
        // off, if the driver had negotiated any.
        if acked_features != 0 {
            if let Err(e) = self.backend.set_offload(0) {
                common.warn(format_args!("TUNSETOFFLOAD 0 at reset: {e}"));
            }
        }
    }
}
