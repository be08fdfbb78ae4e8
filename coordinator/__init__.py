"""Pure request coordination: the data-path messages, quorums and sloppy-quorum targets,
write and read coordination with forwarding and read repair, the replica side, hinted
handoff and the actors writes are coordinated with. It sees its node only through
`coordinator.host.Host` and imports nothing of ours but `ring` and `storage`."""
