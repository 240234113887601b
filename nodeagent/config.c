/* config.c — wolfpack-agent configuration (written next). */
