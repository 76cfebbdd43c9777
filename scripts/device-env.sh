# Source this on the GPU machine (Ubuntu, no Debian -dev packages): unpacks the .deb files carried
# in .devcarry/debs into /opt/deps and points pkg-config, the compiler and the loader at them.
#   . scripts/device-env.sh && cmake -S . -B build -G Ninja && cmake --build build
if [ ! -d /opt/deps/usr ]; then
  for f in .devcarry/debs/*.deb; do dpkg -x "$f" /opt/deps; done
fi
export PKG_CONFIG_SYSROOT_DIR=/opt/deps
export PKG_CONFIG_PATH=/opt/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/opt/deps/usr/share/pkgconfig
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
export CPATH=/opt/deps/usr/include${CPATH:+:$CPATH}
export PATH=/opt/deps/usr/bin:$PATH
