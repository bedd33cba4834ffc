"""A small RTP endpoint for the calls the gateway answers itself (the switchboard IVR).

Pure parts (no I/O, no clock): :mod:`.g711` (μ-law / A-law tables), :mod:`.rtp` (RFC 3550
packets), :mod:`.dtmf` (RFC 4733 events, SIP INFO bodies), :mod:`.sdp` (offer / answer,
RFC 3264), :mod:`.prompts` (WAV loading into 20 ms G.711 frames). I/O: :mod:`.endpoint`
(asyncio datagram sessions, one shared pacing loop, the port allocator).
"""
