# Source this on the GPU machine (Ubuntu, no Debian -dev packages): unpacks the .deb files carried
# in .devcarry/debs into /opt/deps and points pkg-config, the compiler, the loader and PATH
# (protoc-c) at them.
#   . scripts/device-env.sh && cmake -S . -B build -G Ninja && cmake --build build
# Each .deb is unpacked once (a stamp per file), so debs added later (e.g. protobuf-c-compiler,
# libprotoc32, libprotobuf32: protoc-c, which the build runs on hmoe_ctrl.proto) also reach a
# machine that unpacked the earlier set.
mkdir -p /opt/deps/.stamps
for f in .devcarry/debs/*.deb; do
  [ -e "$f" ] || continue
  stamp="/opt/deps/.stamps/$(basename "$f")"
  [ -e "$stamp" ] || { dpkg -x "$f" /opt/deps && touch "$stamp"; }
done
# libzmq.pc names private requirements (libsodium, openpgm, norm, libbsd, krb5-gssapi) whose .pc
# files are not carried; pkg-config refuses libzmq without them, so give it empty stand-ins (the
# shared libraries themselves are carried or on the machine; only the .pc lookup needs them).
pc=/opt/deps/usr/lib/x86_64-linux-gnu/pkgconfig
for p in krb5-gssapi libsodium openpgm-5.3 norm libbsd; do
  printf 'Name: %s\nDescription: stand-in for libzmq.pc\nVersion: 99\n' "$p" >"$pc/$p.pc"
done
export PKG_CONFIG_SYSROOT_DIR=/opt/deps
export PKG_CONFIG_PATH=/opt/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/opt/deps/usr/share/pkgconfig
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
export CPATH=/opt/deps/usr/include${CPATH:+:$CPATH}
export PATH=/opt/deps/usr/bin:$PATH
