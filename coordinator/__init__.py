"""Pure request coordination: quorums, sloppy quorum targets, read repair, hints."""
