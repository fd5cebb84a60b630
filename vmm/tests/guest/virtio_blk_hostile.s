# Real-mode (unreal: the test gives DS a 4 GiB limit) hostile virtio-blk driver for
# vmm/tests/virtio_mmio_guest.rs, which embeds the assembled bytes. Rebuild with:
#   as --32 -o x.o virtio_blk_hostile.s && objcopy -O binary -j .text x.o x.bin
# Powers off (ACPI S5) when every check passes, resets the machine (i8042 0xfe) otherwise.
.code16
.intel_syntax noprefix
start:
  mov ebx, 0xd0000000
  mov eax, dword ptr [ebx]
  cmp eax, 0x74726976
  jne fail
  mov dword ptr [ebx+0x50], 0
  mov dword ptr [ebx+0x50], 0xffffffff
  mov dword ptr [ebx+0x70], 4
  call init
  mov dword ptr [ebx+0x80], 0xfffff000
  mov dword ptr [ebx+0x44], 1
  mov dword ptr [ebx+0x70], 15
  mov eax, dword ptr [ebx+0x70]
  test eax, 0x40
  jz fail
  call init
  mov dword ptr [ebx+0x80], 0x8000
  mov dword ptr [ebx+0x44], 1
  mov dword ptr [ebx+0x70], 15
  mov eax, dword ptr [ebx+0x70]
  cmp eax, 15
  jne fail
  mov dword ptr [0x8000], 0x9000
  mov dword ptr [0x8004], 0
  mov dword ptr [0x8008], 16
  mov dword ptr [0x800c], 0x00010001
  mov dword ptr [0x8010], 0x9100
  mov dword ptr [0x8014], 0
  mov dword ptr [0x8018], 512
  mov dword ptr [0x801c], 0x00000003
  mov dword ptr [0x8200], 0x00010000
  mov word ptr [0x8204], 0
  mov dword ptr [ebx+0x50], 0
  mov ecx, 0x10000000
wait:
  mov ax, word ptr [0x8402]
  cmp ax, 1
  je done
  dec ecx
  jnz wait
  jmp fail
done:
  mov eax, dword ptr [ebx+0x70]
  cmp eax, 15
  jne fail
  mov dx, 0x3c0
  mov al, 0x34
  out dx, al
  hlt
fail:
  mov al, 0xfe
  out 0x64, al
  hlt
init:
  mov dword ptr [ebx+0x70], 0
  mov dword ptr [ebx+0x70], 1
  mov dword ptr [ebx+0x70], 3
  mov dword ptr [ebx+0x24], 1
  mov dword ptr [ebx+0x20], 1
  mov dword ptr [ebx+0x70], 11
  mov dword ptr [ebx+0x30], 0
  mov dword ptr [ebx+0x38], 16
  mov dword ptr [ebx+0x84], 0
  mov dword ptr [ebx+0x90], 0x8200
  mov dword ptr [ebx+0x94], 0
  mov dword ptr [ebx+0xa0], 0x8400
  mov dword ptr [ebx+0xa4], 0
  ret
