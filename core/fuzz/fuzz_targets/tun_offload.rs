//! The Linux offload code on arbitrary input: a tun frame (`virtio_net_hdr` + packet) into
//! the segmenter and checksum completion, and a friend's decrypted packets into the TCP
//! coalescer. Never a panic; segments never outgrow their buffer; coalescing loses or
//! invents no bytes (cutting each super-packet again gives back the packets' total length).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialvpn_core::packet::checksum::{accumulate, finish};
use socialvpn_core::packet::gro::{Coalescer, FrameSink, Output};
use socialvpn_core::packet::gso::{
    complete_checksum, pseudo_header_sum, segment_tcp, VnetHdr, VNET_HDR_LEN,
};

#[derive(Default)]
struct Frames(Vec<([u8; VNET_HDR_LEN], Vec<u8>)>);

impl FrameSink for Frames {
    fn write_frame(
        &mut self,
        vnet: &[u8; VNET_HDR_LEN],
        packet: &[u8],
        _segments: usize,
    ) -> std::io::Result<()> {
        self.0.push((*vnet, packet.to_vec()));
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; 1540];
    if let Some(hdr) = VnetHdr::parse(data) {
        let packet = &data[VNET_HDR_LEN..];
        if hdr.is_gso() {
            let limit = out.len();
            let _ = segment_tcp(&hdr, packet, &mut out, |_, len| assert!(len <= limit));
        } else {
            let _ = complete_checksum(&hdr, &mut packet.to_vec());
        }
    }

    // The rest as packets, each behind a 2-byte length.
    let mut packets = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        packets.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let mut coalescer = Coalescer::default();
    let mut frames = Frames::default();
    for p in &packets {
        coalescer.push(p, &mut frames).unwrap();
    }
    coalescer.flush(&mut frames).unwrap();
    let mut total = 0;
    let mut big = vec![0u8; 65_535];
    for (vnet, frame) in &frames.0 {
        let hdr = VnetHdr::parse(vnet).unwrap();
        if hdr.is_gso() {
            segment_tcp(&hdr, frame, &mut big, |_, len| total += len).unwrap();
        } else {
            total += frame.len();
        }
    }
    assert_eq!(total, packets.iter().map(|p| p.len()).sum::<usize>());

    // The same packets for a tun without offloads: the same joins, written as plain packets
    // whose TCP checksum is complete instead of partial; nothing else differs.
    let mut plain = Coalescer::default();
    plain.set_output(Output::Plain);
    let mut plain_frames = Frames::default();
    for p in &packets {
        plain.push(p, &mut plain_frames).unwrap();
    }
    plain.flush(&mut plain_frames).unwrap();
    assert_eq!(plain_frames.0.len(), frames.0.len());
    for ((vnet, gso), (zero, frame)) in frames.0.iter().zip(&plain_frames.0) {
        assert_eq!(*zero, [0; VNET_HDR_LEN]);
        assert_eq!(gso.len(), frame.len());
        if !VnetHdr::parse(vnet).unwrap().is_gso() {
            assert_eq!(gso, frame);
            continue;
        }
        let v4 = frame[0] >> 4 == 4;
        let ip = if v4 { 20 } else { 40 };
        assert_eq!(gso[..ip + 16], frame[..ip + 16]);
        assert_eq!(gso[ip + 18..], frame[ip + 18..]);
        let pseudo = pseudo_header_sum(&frame[..ip], v4, (frame.len() - ip) as u32);
        assert_eq!(finish(accumulate(pseudo, &frame[ip..])), 0, "TCP checksum");
    }
});
