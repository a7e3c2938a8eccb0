"""Images: reading a file or bytes safely (EXIF orientation, decompression bombs refused, every failure named) and
the robustness transforms (JPEG, resize, blur, crop) shared by CoDE and the shipped detector."""
