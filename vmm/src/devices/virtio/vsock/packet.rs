//! The vsock packet header as plain data, and its moves to and from guest buffers.

use virtio_vsock::packet::VsockPacket;
use vm_memory::bitmap::BitmapSlice;

/// Packet operations (virtio spec 5.10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Connection request.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Connection refused or torn down.
    Rst = 3,
    /// No more sending and/or receiving (flags).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// The sender's buf_alloc/fwd_cnt changed.
    CreditUpdate = 6,
    /// Asks the peer for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The operation of a raw `op` field, if it is one.
    pub fn from_raw(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// A packet header, copied out of (or to be written into) guest memory, so that the
/// connection logic never touches descriptor chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hdr {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Raw operation (see [`Op::from_raw`]).
    pub op: u16,
    /// SHUTDOWN flags.
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed of what it received.
    pub fwd_cnt: u32,
}

impl Hdr {
    /// Copies the header out of a parsed packet.
    pub fn from_packet<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Hdr {
        Hdr {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// Writes the header into a packet's (guest) header buffer.
    pub fn write_to<B: BitmapSlice>(&self, pkt: &mut VsockPacket<'_, B>) {
        pkt.set_src_cid(self.src_cid)
            .set_dst_cid(self.dst_cid)
            .set_src_port(self.src_port)
            .set_dst_port(self.dst_port)
            .set_len(self.len)
            .set_type(self.type_)
            .set_op(self.op)
            .set_flags(self.flags)
            .set_buf_alloc(self.buf_alloc)
            .set_fwd_cnt(self.fwd_cnt);
    }

    /// The operation, if valid.
    pub fn op(&self) -> Option<Op> {
        Op::from_raw(self.op)
    }
}
