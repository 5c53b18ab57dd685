"""What every stage uses: files written atomically (`files`), PNG figures (`plots`)."""
