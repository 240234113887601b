/* config.c — wolfpackd configuration (written next). */
